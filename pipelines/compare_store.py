"""The MLflow store that `make compare` reads, shared by its two reports: an experiment's runs
(`pipelines.compare`) and a sweep's trials (`pipelines.sweep.report`), and the one error both raise.

The CLI in `pipelines.compare` turns a `CompareError` into one line and exit code 2; both reports
import this module rather than each other, so neither depends on the other's import.

Example:

    import tempfile
    from pipelines.compare_store import CompareError, store_uri

    try:
        store_uri(None, tempfile.mkdtemp())   # an empty runs folder: nothing was trained there
    except CompareError as e:
        print(e)   # no MLflow store at .../mlflow.db: train first (`make train`), ...
"""

from __future__ import annotations

import pathlib

from pipelines.config import Config
from pipelines.tracking import resolve_tracking_uri

DEFAULT_RUNS_DIR = Config.runs_dir  # the config's default (a dataclass field's class attribute)


class CompareError(Exception):
    """What was wrong (no store, no such experiment, no runs) and what to do instead."""


def store_uri(tracking_uri: str | None = None, runs_dir: str | pathlib.Path = DEFAULT_RUNS_DIR) -> str:
    """The tracking URI training uses; for the embedded store, check that it exists (reading a
    missing SQLite file would silently create an empty store).

    Args:
        tracking_uri: the store (None: $MLFLOW_TRACKING_URI, else the embedded store of ``runs_dir``).
        runs_dir: the runs folder of the configs, where the embedded store lives.

    Returns:
        The tracking URI.

    Raises:
        CompareError: the embedded store does not exist (the message says how to make or name one).

    Example::

        uri = store_uri("http://127.0.0.1:5000")   # a server is not checked here: 'http://127.0.0.1:5000'
    """
    uri = resolve_tracking_uri(tracking_uri, runs_dir)
    if uri.startswith("sqlite:///"):
        db = pathlib.Path(uri[len("sqlite:///"):])
        if not db.exists():
            raise CompareError(f"no MLflow store at {db}: train first (`make train`), pass --runs-dir to the "
                               f"runs_dir of your config, or point --tracking-uri / $MLFLOW_TRACKING_URI at "
                               f"your tracking server")
    return uri
