"""The MLflow tracking store: which one (`resolve_tracking_uri`), shown with its secrets hidden
(`safe_uri`), opened, and the start-up check that turns every way it can fail into one line: the
store, what is wrong, what to do.

`pipelines.train.train` runs `check_store` before it prepares data or writes anything; the
`pipelines.tracking.Tracker` opens its client with `open_client`. A store that goes away later is
not an error: the Tracker keeps the records and training goes on. The commands that only read a
store (``make compare``, ``make promote``) take it from `existing_store_uri`, which refuses an
embedded store that was never created instead of creating an empty one.

Example:

    import tempfile
    from pipelines.tracking_store import TrackingStoreError, check_store

    check_store(f"sqlite:///{tempfile.mkdtemp()}/mlflow.db", "demo")   # fine: no exception
    try:
        check_store("http://127.0.0.1:9", "demo")
    except TrackingStoreError as e:
        print(e)   # MLflow tracking store http://127.0.0.1:9: does not answer (connection refused); ...
"""

from __future__ import annotations

import contextlib
import logging
import os
import pathlib
import re
from urllib.parse import urlsplit


class TrackingStoreError(Exception):
    """The MLflow store cannot be used at all; the message is one line: the store (secrets hidden),
    what is wrong and what to do."""


def resolve_tracking_uri(configured: str | None, runs_dir: str | pathlib.Path) -> str:
    """Config value, else $MLFLOW_TRACKING_URI, else the embedded SQLite store in ``runs_dir``.

    Example:

        resolve_tracking_uri("http://127.0.0.1:5000", "runs")   # 'http://127.0.0.1:5000'
        resolve_tracking_uri(None, "runs")   # $MLFLOW_TRACKING_URI, else 'sqlite:////.../runs/mlflow.db'
    """
    if configured:
        return configured
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    return f"sqlite:///{pathlib.Path(runs_dir).resolve() / 'mlflow.db'}"


def uri_origin(configured: str | None) -> str:
    """Where `resolve_tracking_uri` took the URI from, in the words a message uses."""
    if configured:
        return "mlflow.tracking_uri"
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return "$MLFLOW_TRACKING_URI"
    return "the embedded store of runs_dir"


@contextlib.contextmanager
def global_tracking_uri(uri: str):
    """Within it, MLflow's global tracking URI ($MLFLOW_TRACKING_URI) is ``uri``.

    MLflow's file registry store (a ``file:`` registry) reads each model version through a client on
    the global tracking URI, not on the client's own; without one that is the default
    sqlite:///mlflow.db, which it creates in the working folder. Registering into, or reading from,
    a file registry therefore runs inside this.

    Example:

        import tempfile
        from mlflow import MlflowClient
        uri = f"file://{tempfile.mkdtemp()}"
        with global_tracking_uri(uri):
            MlflowClient(uri, registry_uri=uri).search_model_versions()   # no ./mlflow.db
    """
    previous = os.environ.get("MLFLOW_TRACKING_URI")
    os.environ["MLFLOW_TRACKING_URI"] = uri
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = previous


_SECRET_QUERY = re.compile(r"pass|secret|token|key|auth|credential", re.IGNORECASE)


def safe_uri(uri: str) -> str:
    """``uri`` with its password and secret-looking query values replaced by ``***``.

    Example:

        assert safe_uri("postgresql://me:pw@db/mlflow") == "postgresql://me:***@db/mlflow"
        assert safe_uri("https://host/mlflow?token=abc&x=1") == "https://host/mlflow?token=***&x=1"
    """
    try:
        parts = urlsplit(uri)
    except ValueError:  # not parseable as a URL: show nothing after the scheme
        return uri.split("://", 1)[0] + "://***" if "://" in uri else "***"
    # Replaced in the text itself: rebuilding it from the parts would change sqlite:////abs paths.
    out = uri
    if parts.password:
        out = out.replace(f":{parts.password}@", ":***@", 1)
    if parts.query:
        pairs = [f"{pair.split('=', 1)[0]}=***" if "=" in pair and _SECRET_QUERY.search(pair.split("=", 1)[0])
                 else pair for pair in parts.query.split("&")]
        out = out.replace("?" + parts.query, "?" + "&".join(pairs), 1)
    return out


def _hide(text: str, uri: str) -> str:
    """An error message with the URI's secrets hidden wherever MLflow quoted them."""
    text = text.replace(uri, safe_uri(uri))
    try:
        password = urlsplit(uri).password
    except ValueError:
        password = None
    return text.replace(f":{password}@", ":***@") if password else text


def error_line(error: BaseException, uri: str, limit: int = 200) -> str:
    """The first line of an error's message, the URI's secrets hidden, at most ``limit`` characters."""
    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    text = _hide(text, uri)
    return text if len(text) <= limit else text[:limit] + "..."


def _is_server(uri: str) -> bool:
    return uri.split(":", 1)[0].lower() in ("http", "https", "databricks", "databricks-uc", "uc")


_NO_TRACKING = "or train without tracking: --set mlflow.enabled=false"


def _sqlite_path(uri: str) -> pathlib.Path | None:
    """The database file of a ``sqlite:///`` URI (relative to the working folder, as SQLAlchemy
    reads it), or None for an in-memory one."""
    raw = uri[len("sqlite:///"):].split("?", 1)[0]
    return None if raw in ("", ":memory:") else pathlib.Path(raw)


def _check_sqlite(uri: str, where: str) -> None:
    """An SQLite store can be created or opened for writing, checked without creating anything:
    MLflow itself would create the folders, then retry a database it cannot open for minutes."""
    import sqlite3

    path = _sqlite_path(uri)
    if path is None:
        return
    fix = (f"choose a writable place for it: --set runs_dir=DIR (the embedded store goes there) or "
           f"mlflow.tracking_uri=sqlite:///DIR/mlflow.db, {_NO_TRACKING}")
    if path.is_dir():
        raise TrackingStoreError(f"{where}: {path} is a folder, not a database file; {fix}")
    if path.exists():
        db = None
        try:
            db = sqlite3.connect(path.resolve().as_uri() + "?mode=rw", uri=True, isolation_level=None)
            db.execute("PRAGMA schema_version")  # fails on a file that is not an SQLite database
            db.execute("BEGIN IMMEDIATE")  # takes the write lock: fails on a read-only file
            db.execute("ROLLBACK")
        except sqlite3.Error as e:
            raise TrackingStoreError(f"{where}: cannot open {path} for writing ({e}); {fix}") from None
        finally:
            if db is not None:
                db.close()
        return
    problem = folder_problem(path.parent)
    if problem:
        raise TrackingStoreError(f"{where}: cannot create {path}: {problem}; {fix}")


def folder_problem(folder: str | pathlib.Path) -> str | None:
    """Why files cannot be written in ``folder`` (creating the folders it needs), or None; checked
    without creating anything. Used for the embedded store's folder and for the folders a run
    writes to (`pipelines.runs.check_folders`).

    Example:

        folder_problem("/tmp/new/folder")   # None: /tmp is writable
        folder_problem("/etc/hostname/runs")   # '/etc/hostname is a file, not a folder'
    """
    import tempfile

    folder = pathlib.Path(folder).expanduser().resolve()
    existing = next(p for p in (folder, *folder.parents) if p.exists())
    if not existing.is_dir():
        return f"{existing} is a file, not a folder"
    try:
        fd, probe = tempfile.mkstemp(dir=existing, prefix=".setnet-write-test-")
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        return f"{existing} is not writable ({e.strerror or e})"
    return None


def _where(uri: str, origin: str | None) -> str:
    return f"MLflow tracking store {safe_uri(uri)}" + (f" (from {origin})" if origin else "")


def open_client(uri: str, origin: str | None = None):
    """An ``MlflowClient`` for ``uri``, or `TrackingStoreError` when MLflow cannot open the store
    (unknown scheme, missing database driver, a local store that cannot be created). Servers are
    not contacted here.

    Args:
        uri: the tracking URI.
        origin: where it came from (`uri_origin`), for the message; None: not said.

    Example:

        import tempfile
        client = open_client(f"sqlite:///{tempfile.mkdtemp()}/mlflow.db")
        print(client.search_experiments())   # the Default experiment
    """
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    where = _where(uri, origin)
    if uri.startswith("sqlite:///"):
        _check_sqlite(uri, where)
    try:
        return MlflowClient(tracking_uri=uri)
    except ImportError as e:
        raise TrackingStoreError(
            f"{where}: needs the Python module {e.name or str(e)!r}, which is not installed; install it, "
            f"or use an MLflow server (--set mlflow.tracking_uri=http://HOST:PORT) or "
            f"sqlite:///PATH/mlflow.db, {_NO_TRACKING}") from None
    except MlflowException as e:
        if "Unsupported" in type(e).__name__ or "unsupported URI" in str(e):
            scheme = uri.split("://", 1)[0] if "://" in uri else uri.split(":", 1)[0]
            raise TrackingStoreError(
                f"{where}: MLflow has no store for the scheme {scheme!r}; use http(s)://HOST:PORT (an MLflow "
                f"server), sqlite:///PATH/mlflow.db or file:///FOLDER, {_NO_TRACKING}") from None
        if "MLFLOW_ALLOW_FILE_STORE" in str(e):
            raise TrackingStoreError(
                f"{where}: MLflow's file store is switched off (MLFLOW_ALLOW_FILE_STORE="
                f"{os.environ.get('MLFLOW_ALLOW_FILE_STORE')}); unset it, or use sqlite:///PATH/mlflow.db, "
                f"{_NO_TRACKING}") from None
        raise TrackingStoreError(f"{where}: MLflow cannot open it ({error_line(e, uri)}); check the URI, "
                                 f"{_NO_TRACKING}") from None
    except Exception as e:  # OSError, SQLAlchemy errors: whatever opening the store ran into
        raise TrackingStoreError(f"{where}: MLflow cannot open it ({type(e).__name__}: {error_line(e, uri)}); "
                                 f"check the URI, {_NO_TRACKING}") from None


def _unreachable_reason(error: Exception, uri: str) -> str:
    """'connection refused', 'name or service not known', 'read timed out'... from a requests error
    wrapped in MLflow's message, else its first line."""
    text = str(error)
    found = re.search(r"\[Errno -?\d+\] ([^'\"\)\]]+)", text) or re.search(r"(Read timed out|timed out)", text)
    return found.group(1).strip().lower() if found else error_line(error, uri)


def _http_status(error: Exception) -> int | None:
    """The HTTP status a server answered with, from MLflow's exception, or None when none came."""
    from mlflow.exceptions import RestException

    if isinstance(error, RestException):
        return error.get_http_status_code()
    found = re.search(r"error code (\d{3}) != 200|too many (\d{3}) error responses", str(error))
    return int(found.group(1) or found.group(2)) if found else None


def check_store(uri: str, experiment: str, origin: str | None = None) -> None:
    """Start-up check: the store opens and answers (the first request a training makes), or
    `TrackingStoreError` says in one line what is wrong and what to do. Later outages are the
    `Tracker`'s: it keeps the records and training goes on.

    Args:
        uri: the tracking URI (`resolve_tracking_uri`).
        experiment: the experiment the run will log to (looked up, not created).
        origin: where the URI came from (`uri_origin`); None: not said.

    Example:

        import tempfile
        check_store(f"sqlite:///{tempfile.mkdtemp()}/mlflow.db", "demo")   # fine: no exception
        try:
            check_store("http://127.0.0.1:9", "demo")
        except TrackingStoreError as e:
            print(e)   # ... does not answer (connection refused); start the server, ...
    """
    from mlflow.exceptions import MlflowException

    client = open_client(uri, origin)
    where = _where(uri, origin)
    # urllib3 logs each retry of a refused connection as a warning; the error below says it in one line.
    retries = logging.getLogger("urllib3.connectionpool")
    level = retries.level
    retries.setLevel(logging.ERROR)
    try:
        client.get_experiment_by_name(experiment)
    except Exception as e:
        status = _http_status(e)
        if status in (401, 403):
            raise TrackingStoreError(
                f"{where}: refused access (HTTP {status}); give it credentials ($MLFLOW_TRACKING_USERNAME and "
                f"$MLFLOW_TRACKING_PASSWORD, or $MLFLOW_TRACKING_TOKEN), {_NO_TRACKING}") from None
        if status is not None or "not in a valid JSON format" in str(e):
            answer = f"HTTP {status}" if status is not None else "a page that is not JSON"
            raise TrackingStoreError(
                f"{where}: answers with {answer}, not with MLflow's API; check that an MLflow tracking server "
                f"runs there (and its log), point --set mlflow.tracking_uri=URI at one, {_NO_TRACKING}") from None
        if _is_server(uri) and isinstance(e, MlflowException):
            raise TrackingStoreError(
                f"{where}: does not answer ({_unreachable_reason(e, uri)}); start the server, or point "
                f"--set mlflow.tracking_uri=URI at a running one (sqlite:///PATH/mlflow.db needs no server), "
                f"{_NO_TRACKING}") from None
        raise TrackingStoreError(f"{where}: cannot be read ({type(e).__name__}: {error_line(e, uri)}); "
                                 f"check the URI, {_NO_TRACKING}") from None
    finally:
        retries.setLevel(level)


def existing_store_uri(tracking_uri: str | None, runs_dir: str | pathlib.Path) -> str:
    """The store a command that only reads (``make compare``, ``make promote``) should read: the one
    training logs to (`resolve_tracking_uri`), checked to exist when it is an SQLite file, because
    opening a missing one would silently create an empty store. Servers are not contacted here.

    Args:
        tracking_uri: the store (None: $MLFLOW_TRACKING_URI, else the embedded store of ``runs_dir``).
        runs_dir: the runs folder of the configs, where the embedded store lives.

    Returns:
        The tracking URI.

    Raises:
        TrackingStoreError: the SQLite store does not exist (the message says how to make or name one).

    Example:

        import tempfile
        existing_store_uri("http://127.0.0.1:5000", "runs")   # 'http://127.0.0.1:5000'
        try:
            existing_store_uri(None, tempfile.mkdtemp())   # an empty runs folder: nothing was trained there
        except TrackingStoreError as e:
            print(e)   # no MLflow store at .../mlflow.db: train first (`make train`), ...
    """
    uri = resolve_tracking_uri(tracking_uri, runs_dir)
    path = _sqlite_path(uri) if uri.startswith("sqlite:///") else None
    if path is not None and not path.exists():
        raise TrackingStoreError(f"no MLflow store at {path}: train first (`make train`), pass --runs-dir to the "
                                 f"runs_dir of your config, or point --tracking-uri / $MLFLOW_TRACKING_URI at "
                                 f"your tracking server")
    return uri
