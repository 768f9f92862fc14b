"""Compare the runs of an experiment, read through MLflow: ``make compare [EXPERIMENT=name]``.

    python -m pipelines.compare                          # the experiment with the latest run
    python -m pipelines.compare --experiment setnet-modelnet40 --params train.label_smoothing
    python -m pipelines.compare --ui                     # `make mlflow-ui`: the MLflow UI on the same store
    python -m pipelines.compare --parent setnet-digits-default   # a sweep: trials, plots, importances

Prints one row per run (model, key params, best validation accuracy, test
accuracy, minutes, examples/s) and writes a comparison PNG (validation accuracy
per epoch of every run; test accuracy against training throughput). Regression
runs show their own figures instead: best validation MAE, test MAE and RMSE,
validation MAE per epoch and test MAE against throughput. With ``--parent`` it reports a sweep
instead (`pipelines.sweep.report`). The store is the one training logs to: ``--tracking-uri``,
else ``$MLFLOW_TRACKING_URI``, else the embedded ``sqlite:///<runs_dir>/mlflow.db``
(`pipelines.tracking_store.existing_store_uri`). See docs/tracking.md.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import statistics
import sys
from typing import Callable, Sequence

from pipelines.config import Config
from pipelines.tracking import local_artifact_root
from pipelines.tracking_store import TrackingStoreError, error_line, existing_store_uri, safe_uri

DEFAULT_RUNS_DIR = Config.runs_dir  # the config's default (a dataclass field's class attribute)


class CompareError(Exception):
    """What was wrong (no such experiment or sweep, no runs) and what to do instead; raised by both
    reports (`compare`, `pipelines.sweep.report.compare_sweep`), one line and exit code 2 in the CLI."""


# Columns of the table: (header, row key, format). Rows are plain dicts, so `compare()` returns
# the same figures the table shows.
COLUMNS = (
    ("run", "run", "{}"),
    ("model", "model", "{}"),
    ("data", "data", "{}"),
    ("points", "num_points", "{}"),
    ("batch", "batch_size", "{}"),
    ("lr", "learning_rate", "{}"),
    ("epochs", "epochs", "{}"),
    ("params", "parameters", "{:,}"),
    ("best val acc", "best_val_accuracy", "{:.4f}"),
    ("test acc", "test_accuracy", "{:.4f}"),
    ("best val mae", "best_val_mae", "{:.4g}"),
    ("test mae", "test_mae", "{:.4g}"),
    ("test rmse", "test_rmse", "{:.4g}"),
    ("train min", "train_minutes", "{:.2f}"),
    ("wall min", "wall_minutes", "{:.2f}"),
    ("examples/s", "examples_per_second", "{:.0f}"),
    ("status", "status", "{}"),
)


# Config keys the fixed columns already show, and keys that say where a run is reported rather
# than what it trains: neither becomes an automatic "differs between runs" column.
_SHOWN = ("data.name", "data.num_points", "data.batch_size", "train.learning_rate", "model.parameters", "model.type")
_NOT_COMPARED = ("run_name", "runs_dir", "experiment", "mlflow.", "export.", "train.resume", "train.log_every",
                 "data.data_dir", "data.manual_dir", "data.cache")
MAX_AUTO_COLUMNS = 8


def differing_params(rows: Sequence[dict], exclude: Sequence[str] = ()) -> list[str]:
    """Config keys whose values differ between the runs (beyond the fixed columns), so that two rows
    that look alike in the table never hide what sets them apart (e.g. ``train.xla``)."""
    keys = sorted({k for r in rows for k in r["params"]})
    out = []
    for key in keys:
        if key in _SHOWN or key in exclude or any(key == p or (p.endswith(".") and key.startswith(p))
                                                  for p in _NOT_COMPARED):
            continue
        if key.startswith("model.blocks.") and (key.endswith((".kind", ".units"))
                                                or any(key not in r["params"] for r in rows)):
            continue  # in the model label, or a block only deeper models have
        if len({r["params"].get(key) for r in rows}) > 1:
            out.append(key)
    return out


def model_label(params: dict) -> str:
    """'setnet l64-q128' (block kinds and widths) or 'pointnet', from a run's flattened config."""
    kind = params.get("model.type", "?")
    if kind != "setnet":
        return kind
    blocks, i = [], 0
    while f"model.blocks.{i}.kind" in params:
        blocks.append(f"{params[f'model.blocks.{i}.kind'][0]}{params.get(f'model.blocks.{i}.units', '?')}")
        i += 1
    return f"setnet {'-'.join(blocks)}" if blocks else "setnet"


def _experiment(client, name: str | None):
    from mlflow.entities import ViewType

    experiments = client.search_experiments(view_type=ViewType.ACTIVE_ONLY)
    if name is None:
        latest = client.search_runs([e.experiment_id for e in experiments], max_results=1,
                                    order_by=["attributes.start_time DESC"]) if experiments else []
        if not latest:
            raise CompareError("the tracking store has no runs yet: train first (`make train`)")
        return client.get_experiment(latest[0].info.experiment_id), experiments
    for exp in experiments:
        if exp.name == name:
            return exp, experiments
    names = sorted(e.name for e in experiments if e.name != "Default") or ["(none)"]
    raise CompareError(f"experiment {name!r} does not exist in this tracking store; experiments there: "
                       f"{', '.join(names)} (pass one with EXPERIMENT=... or --experiment)")


def _number(params: dict, key: str, cast=float):
    try:
        return cast(params[key])
    except (KeyError, ValueError, TypeError):
        return None


def collect(client, experiment) -> tuple[list[dict], dict[str, list[float]]]:
    """(rows, validation-accuracy curves by run name) of the experiment's active runs."""
    runs = client.search_runs([experiment.experiment_id], order_by=["attributes.start_time ASC"])
    rows, curves = [], {}
    for run in runs:
        rid, params, metrics = run.info.run_id, run.data.params, run.data.metrics

        def history(key):
            return [m.value for m in sorted(client.get_metric_history(rid, key), key=lambda m: m.step)]

        val_acc = history("val_accuracy")
        val_mae = [] if val_acc else history("val_mae")
        speed = history("examples_per_second")
        seconds = history("epoch_seconds")
        name = run.info.run_name or rid[:8]
        wall = metrics.get("wall_minutes")
        if wall is None and run.info.end_time:
            wall = (run.info.end_time - run.info.start_time) / 60000
        row = {
            "run": name, "run_id": rid, "model": model_label(params), "data": params.get("data.name"),
            "num_points": _number(params, "data.num_points", int), "batch_size": _number(params, "data.batch_size", int),
            "learning_rate": _number(params, "train.learning_rate"), "epochs": len(history("loss")),
            "parameters": _number(params, "model.parameters", int),
            "best_val_accuracy": metrics.get("best_val_accuracy", max(val_acc) if val_acc else None),
            "test_accuracy": metrics.get("test_accuracy"),
            "best_val_mae": metrics.get("best_val_mae", min(val_mae) if val_mae else None),
            "test_mae": metrics.get("test_mae"), "test_rmse": metrics.get("test_rmse"),
            "task": "regression" if val_mae or "test_mae" in metrics else "classification",
            # Training time (the epochs themselves) and the whole job; a resumed run's wall time
            # counts its last process only.
            "train_minutes": sum(seconds) / 60 if seconds else None, "wall_minutes": wall,
            # The median epoch: the first one also pays for compilation.
            "examples_per_second": statistics.median(speed) if speed else None,
            "status": run.info.status, "params": dict(params),
        }
        rows.append(row)
        curves[name] = val_acc or val_mae
    # Best first (highest accuracy, lowest MAE); classifiers before regressors, unfinished runs last.
    rows.sort(key=lambda r: (r["test_accuracy"] is None and r["test_mae"] is None, r["task"] == "regression",
                             -(r["test_accuracy"] or 0), r["test_mae"] or 0, -(r["best_val_accuracy"] or 0)))
    return rows, curves


# Each task's figures (accuracy; MAE and RMSE): shown when the table has a run of that task.
_TASK_COLUMNS = ("best_val_accuracy", "test_accuracy", "best_val_mae", "test_mae", "test_rmse")


def format_table(rows: Sequence[dict], extra_params: Sequence[str] = ()) -> str:
    """Fixed-width text table; ``#`` is the run's number in the comparison PNG."""
    tasks = {r.get("task", "classification") for r in rows}
    hidden = (() if "classification" in tasks else _TASK_COLUMNS[:2]) + (
        () if "regression" in tasks else _TASK_COLUMNS[2:])
    columns = list(COLUMNS[:-9]) + [(k, k, "{}") for k in extra_params] + [
        c for c in COLUMNS[-9:] if c[1] not in hidden]
    cells = [["#"] + [h for h, _, _ in columns]]
    for i, row in enumerate(rows, start=1):
        cells.append([str(i)] + ["-" if row.get(key) is None else fmt.format(row[key]) for _, key, fmt in columns])
    widths = [max(len(r[i]) for r in cells) for i in range(len(cells[0]))]
    left = {"run", "model", "data", "status"}
    lines = ["  ".join(c.ljust(w) if cells[0][i] in left else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))).rstrip()
             for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def compare(experiment: str | None = None, *, tracking_uri: str | None = None,
            runs_dir: str | pathlib.Path = DEFAULT_RUNS_DIR, out: str | pathlib.Path | None = None,
            extra_params: Sequence[str] = (), printer: Callable[[str], None] = print) -> dict:
    """Print the comparison table of an experiment and write its PNG.

    Args:
        experiment: experiment name; None picks the experiment with the most recent run.
        tracking_uri: the store (None: $MLFLOW_TRACKING_URI, else the embedded store of ``runs_dir``).
        runs_dir: the runs folder of the configs (the embedded store and the default PNG live there).
        out: the PNG path (default ``<runs_dir>/<experiment>/comparison.png``).
        extra_params: more config keys to show as columns (e.g. ``train.label_smoothing``); keys whose
            values differ between the runs are shown anyway (up to `MAX_AUTO_COLUMNS`).

    Returns:
        dict with ``experiment``, ``tracking_uri``, ``rows`` (one dict per run: the table's figures,
        ``run_id`` and the run's ``params``), ``columns`` (the config keys shown beyond the fixed ones),
        ``table`` (the text) and ``png`` (path).

    Raises:
        TrackingStoreError: the embedded store does not exist.
        CompareError: no such experiment (the message lists those that exist), no runs, or the store
            cannot be reached.

    Example::

        result = compare("setnet-default")
        best = result["rows"][0]["run"]
    """
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from pipelines import plots

    uri = existing_store_uri(tracking_uri, runs_dir)
    client = MlflowClient(tracking_uri=uri)
    try:
        exp, _ = _experiment(client, experiment)
        rows, curves = collect(client, exp)
    except MlflowException as e:
        raise CompareError(f"cannot read the tracking store at {safe_uri(uri)}: {error_line(e, uri, 300)}") from None
    if not rows:
        raise CompareError(f"experiment {exp.name!r} at {safe_uri(uri)} has no runs (deleted runs are not shown)")
    auto = differing_params(rows, exclude=extra_params)
    if len(auto) > MAX_AUTO_COLUMNS:
        printer(f"{len(auto)} config keys differ between these runs; showing {MAX_AUTO_COLUMNS} "
                f"(name more with --params): {', '.join(auto)}")
        auto = auto[:MAX_AUTO_COLUMNS]
    columns = list(extra_params) + auto
    for row in rows:
        for key in columns:
            row[key] = row["params"].get(key)
    table = format_table(rows, columns)
    png = pathlib.Path(out) if out else pathlib.Path(runs_dir) / exp.name / "comparison.png"
    png.parent.mkdir(parents=True, exist_ok=True)
    metric = "mae" if rows and all(r.get("task") == "regression" for r in rows) else "accuracy"
    plots.comparison(rows, curves, png, title=f"{exp.name}: {len(rows)} run(s)", metric=metric)
    chosen = "" if experiment else " (the experiment with the latest run; pick another with EXPERIMENT=...)"
    printer(f"experiment {exp.name!r}{chosen} at {safe_uri(uri)}: {len(rows)} run(s)\n{table}\n"
            f"comparison plot: {png}")
    return {"experiment": exp.name, "tracking_uri": uri, "rows": rows, "columns": columns, "table": table,
            "png": png}


# --------------------------------------------------------------------------- the UI


def server_env() -> dict:
    # Job execution (MLflow 3's background job runner, huey) is for GenAI evaluation jobs; off, the
    # server is one light process.
    return {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}


def server_command(uri: str, runs_dir: str | pathlib.Path, host: str = "127.0.0.1", port: int = 5000) -> list[str]:
    """``mlflow server`` (UI and REST API, one worker) on a database store; artifacts of runs logged
    through it go to ``<runs_dir>/mlartifacts``, next to those of the embedded store."""
    if uri.startswith(("http://", "https://", "databricks")):
        raise CompareError(f"the tracking store is the server at {safe_uri(uri)}: it already serves the MLflow "
                           f"UI, open it in a browser")
    artifacts = local_artifact_root(uri, runs_dir) or (pathlib.Path(runs_dir).resolve() / "mlartifacts").as_uri()
    return [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", uri,
            "--artifacts-destination", artifacts, "--host", host, "--port", str(port), "--workers", "1"]


# --------------------------------------------------------------------------- CLI


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m pipelines.compare", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--experiment", "-e", default=None, help="experiment name (default: the one with the latest run)")
    p.add_argument("--tracking-uri", default=None, help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, "
                                                        "else sqlite:///<runs-dir>/mlflow.db)")
    p.add_argument("--runs-dir", default=DEFAULT_RUNS_DIR, help="the configs' runs_dir (default: %(default)s)")
    p.add_argument("--out", default=None, help="comparison PNG (default: <runs-dir>/<experiment>/comparison.png)")
    p.add_argument("--params", nargs="+", default=[], metavar="KEY", help="more config keys to show as columns")
    p.add_argument("--parent", default=None, metavar="SWEEP",
                   help="compare a sweep's trials instead: its study name or parent run id (make compare PARENT=...)")
    p.add_argument("--ui", action="store_true", help="serve the MLflow UI on the store instead (make mlflow-ui)")
    p.add_argument("--host", default="127.0.0.1", help="UI host (default: %(default)s)")
    p.add_argument("--port", type=int, default=5000, help="UI port (default: %(default)s)")
    return p


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.ui:
            uri = existing_store_uri(args.tracking_uri, args.runs_dir)
            command = server_command(uri, args.runs_dir, args.host, args.port)
            print(f"MLflow UI on http://{args.host}:{args.port} for {safe_uri(uri)} (Ctrl-C stops it)", flush=True)
            os.execve(command[0], command, server_env())
        if args.parent:
            # Here, not at the top: the sweep report imports CompareError from this module.
            from pipelines.sweep.report import compare_sweep

            compare_sweep(args.parent, args.experiment, tracking_uri=args.tracking_uri, runs_dir=args.runs_dir,
                          out=args.out)
        else:
            compare(args.experiment, tracking_uri=args.tracking_uri, runs_dir=args.runs_dir, out=args.out,
                    extra_params=args.params)
    except (CompareError, TrackingStoreError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
