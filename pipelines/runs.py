"""The run folder: its name, where it is, whether it resumes, and the facts recorded about a run.

A run lives in ``<runs_dir>/<experiment>/<run_name>/``. Without ``run_name`` the name is
``<dataset>-<architecture>-<config digest>``, so that the same command finds the same folder again:
an unfinished run there is resumed, a finished one left alone and ``-2``, ``-3``... started.

Example:

    from pipelines.config import load_config
    from pipelines.runs import default_run_name, resolve_run_dir

    cfg = load_config(None, ["runs_dir=/tmp/runs"])
    print(default_run_name(cfg))   # synthetic_shapes-setnet-lql-<8 hex digits>
    print(resolve_run_dir(cfg))    # (PosixPath('/tmp/runs/setnet-default/...'), False) the first time
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import platform
import subprocess

from pipelines import config as config_lib
from pipelines.config import Config, ConfigError
from pipelines.tracking import read_json
from pipelines.tracking_store import folder_problem

PROJECT_ROOT = pathlib.Path(__file__).resolve().parent.parent
# Keys that change where or how a run is reported, not what it trains: left out of the run's name.
_NOT_IN_NAME = ("run_name", "runs_dir", "train.resume", "train.log_every", "train.deterministic",
                "train.checkpoint_every_steps", "train.checkpoint_dir", "mlflow.", "export.", "experiment")


def config_digest(cfg: Config) -> str:
    """Eight hex digits of what the config trains (not where or how it is reported)."""
    flat = {k: v for k, v in config_lib.flatten(cfg).items()
            if not any(k == p or (p.endswith(".") and k.startswith(p)) for p in _NOT_IN_NAME)}
    return hashlib.sha1(json.dumps(flat, sort_keys=True, default=str).encode()).hexdigest()[:8]


def default_run_name(cfg: Config) -> str:
    """``<dataset>-<architecture>-<config digest>``, e.g. ``digits-setnet-lql-1a2b3c4d``."""
    if cfg.model.type.startswith("pointnet"):
        arch = cfg.model.type
    else:
        arch = "setnet-" + "".join(b.kind[0] for b in cfg.model.blocks)  # l / q / f per block
    data = cfg.data.name.replace("/", "-")
    return f"{data}-{arch}-{config_digest(cfg)}"


def read_history(run_dir: pathlib.Path) -> dict | None:
    """The run's ``history.json`` (epochs, completed, test), or None when there is none yet."""
    return read_json(run_dir / "history.json")


def resolve_run_dir(cfg: Config) -> tuple[pathlib.Path, bool]:
    """(run folder, resuming?). The first folder of this name that is not finished is resumed."""
    base = pathlib.Path(cfg.runs_dir) / cfg.experiment / (cfg.run_name or default_run_name(cfg))
    candidate, i = base, 1
    while True:
        hist = read_history(candidate)
        exists = candidate.exists() and any(candidate.iterdir())
        if not exists:
            return candidate, False
        if cfg.train.resume == "auto" and not (hist or {}).get("completed"):
            return candidate, True
        i += 1
        candidate = base.with_name(f"{base.name}-{i}")


def _written_folders(cfg: Config, chief: bool) -> list[tuple[str, str, str, str]]:
    """(``key=value`` as the message names it, local folder, what goes there, what to do) for each
    local folder this task of a run writes to."""
    from pipelines.datasets import default_data_dir

    folders = []
    if chief:
        folders.append((f"runs_dir={cfg.runs_dir}", cfg.runs_dir, "run folders", "--set runs_dir=DIR"))
    # Every worker prepares (or takes the lock on) the data itself, so every worker needs its data dir.
    data_dir = cfg.data.data_dir
    if data_dir:
        named, fix = f"data.data_dir={data_dir}", "--set data.data_dir=DIR"
    else:  # null: $TFDS_DATA_DIR, else the project's data/tfds
        data_dir, env = str(default_data_dir()), os.environ.get("TFDS_DATA_DIR")
        named = f"data.data_dir=null ({f'$TFDS_DATA_DIR={env}' if env else f'default {data_dir}'})"
        fix = "--set data.data_dir=DIR" + (" or change $TFDS_DATA_DIR" if env else "")
    folders.append((named, data_dir, "prepared datasets", fix))
    if chief and cfg.export.enabled:
        folders.append((f"export.root={cfg.export.root}", cfg.export.root, "exports",
                        "--set export.root=DIR, or train without exporting: --set export.enabled=false"))
    if chief and cfg.train.checkpoint_dir:
        folders.append((f"train.checkpoint_dir={cfg.train.checkpoint_dir}", cfg.train.checkpoint_dir,
                        "job checkpoints", "--set train.checkpoint_dir=DIR"))
    # Object stores (gs://, s3://, hdfs://...) are not probed: whether a bucket takes writes cannot be
    # told offline without writing to it, and their errors name the location themselves.
    return [f for f in folders if "://" not in f[1]]


def check_folders(cfg: Config, *, chief: bool = True) -> None:
    """`ConfigError` (one line naming the config key) when a local folder the run writes to cannot be
    created or written: ``runs_dir``, ``data.data_dir`` (or its default), ``export.root`` when
    ``export.enabled`` and ``train.checkpoint_dir`` when set. Checked before any data is prepared,
    without creating anything, so that a run does not fail after its training (the export) or with a
    traceback (the data dir).

    Args:
        cfg: the resolved config.
        chief: whether this task is the chief; the other workers of a multi-worker job write only
            their data dir.

    Example:

        from pipelines.config import load_config
        cfg = load_config(None, ["runs_dir=/tmp/runs", "export.root=/proc/exports"])
        try:
            check_folders(cfg)
        except ConfigError as e:
            print(e)   # export.root=/proc/exports: exports cannot be created there: /proc is not writable ...
    """
    for named, folder, what, fix in _written_folders(cfg, chief):
        problem = folder_problem(folder)
        if problem:
            raise ConfigError(f"{named}: {what} cannot be created there: {problem}; choose a writable folder: "
                              f"{fix}")


def checkpoint_folder(cfg: Config, run_dir: pathlib.Path) -> str:
    """The job's checkpoint folder: ``train.checkpoint_dir/<experiment>/<run>`` (any ``tf.io.gfile``
    location, e.g. gs://), else ``<run folder>/checkpoints``."""
    root = cfg.train.checkpoint_dir
    if not root:
        return str(run_dir / "checkpoints")
    return f"{root.rstrip('/')}/{cfg.experiment}/{run_dir.name}"


def note_unfinished_siblings(cfg: Config, run_dir: pathlib.Path, say) -> None:
    """--fresh beside unfinished runs of the same name: say how to resume them instead."""
    import tensorflow as tf

    base = cfg.run_name or default_run_name(cfg)
    parent = pathlib.Path(cfg.runs_dir) / cfg.experiment
    for candidate in sorted(parent.glob(f"{base}*")):
        if candidate == run_dir or not (candidate.name == base or candidate.name.startswith(base + "-")):
            continue
        if not (read_history(candidate) or {}).get("completed") and tf.train.latest_checkpoint(
                checkpoint_folder(cfg, candidate)):
            say(f"--fresh: starting {run_dir.name}; the unfinished run {candidate} is left as it is "
                f"(resume it with the same command without --fresh and --set run_name={candidate.name})")


def git_commit() -> tuple[str, bool]:
    """(commit, dirty) of the project checkout, or ("unknown", False) outside git."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=PROJECT_ROOT, capture_output=True,
                                text=True, timeout=10).stdout.strip()
        dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=PROJECT_ROOT,
                                    capture_output=True, text=True, timeout=10).stdout.strip())
        return commit or "unknown", dirty
    except (OSError, subprocess.SubprocessError):
        return "unknown", False


def hardware() -> str:
    """'2 GPU(s)' or 'CPU x86_64, 16 cores': what a run's figures were measured on."""
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    cpu = platform.processor() or platform.machine()
    return f"{len(gpus)} GPU(s)" if gpus else f"CPU {cpu}, {os.cpu_count()} cores"
