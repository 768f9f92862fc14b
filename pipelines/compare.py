"""Compare the runs of an experiment, read through MLflow: ``make compare [EXPERIMENT=name]``.

    python -m pipelines.compare                          # the experiment with the latest run
    python -m pipelines.compare --experiment setnet-modelnet40 --params train.label_smoothing
    python -m pipelines.compare --ui                     # `make mlflow-ui`: the MLflow UI on the same store
    python -m pipelines.compare --parent setnet-digits-default   # a sweep: trials, plots, importances

Prints one row per run (model, key params, best validation accuracy, test
accuracy, minutes, examples/s) and writes a comparison PNG (validation accuracy
per epoch of every run; test accuracy against training throughput). Regression
runs show their own figures instead: best validation MAE, test MAE and RMSE,
validation MAE per epoch and test MAE against throughput. The store
is the one training logs to: ``--tracking-uri``, else ``$MLFLOW_TRACKING_URI``,
else the embedded ``sqlite:///<runs_dir>/mlflow.db``. See docs/tracking.md.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import pathlib
import statistics
import sys
from typing import Callable, Sequence

from pipelines.config import Config
from pipelines.tracking import local_artifact_root, resolve_tracking_uri

DEFAULT_RUNS_DIR = Config.runs_dir  # the config's default (a dataclass field's class attribute)


class CompareError(Exception):
    """What was wrong (no store, no such experiment, no runs) and what to do instead."""


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


def store_uri(tracking_uri: str | None = None, runs_dir: str | pathlib.Path = DEFAULT_RUNS_DIR) -> str:
    """The tracking URI training uses; for the embedded store, check that it exists (reading a
    missing SQLite file would silently create an empty store)."""
    uri = resolve_tracking_uri(tracking_uri, runs_dir)
    if uri.startswith("sqlite:///"):
        db = pathlib.Path(uri[len("sqlite:///"):])
        if not db.exists():
            raise CompareError(f"no MLflow store at {db}: train first (`make train`), pass --runs-dir to the "
                               f"runs_dir of your config, or point --tracking-uri / $MLFLOW_TRACKING_URI at "
                               f"your tracking server")
    return uri


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
        CompareError: no store, no such experiment (the message lists those that exist), no runs, or
            the store cannot be reached.

    Example::

        result = compare("setnet-default")
        best = result["rows"][0]["run"]
    """
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from pipelines import plots

    uri = store_uri(tracking_uri, runs_dir)
    client = MlflowClient(tracking_uri=uri)
    try:
        exp, _ = _experiment(client, experiment)
        rows, curves = collect(client, exp)
    except MlflowException as e:
        raise CompareError(f"cannot read the tracking store at {uri}: {str(e).splitlines()[0][:300]}") from None
    if not rows:
        raise CompareError(f"experiment {exp.name!r} at {uri} has no runs (deleted runs are not shown)")
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
    printer(f"experiment {exp.name!r}{chosen} at {uri}: {len(rows)} run(s)\n{table}\ncomparison plot: {png}")
    return {"experiment": exp.name, "tracking_uri": uri, "rows": rows, "columns": columns, "table": table,
            "png": png}


# --------------------------------------------------------------------------- a sweep


def find_parent(client, parent: str, experiment: str | None = None):
    """A sweep's parent run by run id, study name (tag ``sweep.study``) or run name (``sweep-<study>``)."""
    from mlflow.entities import ViewType
    from mlflow.exceptions import MlflowException

    if len(parent) == 32 and all(c in "0123456789abcdef" for c in parent):
        try:
            return client.get_run(parent)
        except MlflowException:
            pass
    experiments = client.search_experiments(view_type=ViewType.ACTIVE_ONLY)
    if experiment is not None:
        experiments = [e for e in experiments if e.name == experiment]
        if not experiments:
            raise CompareError(f"experiment {experiment!r} does not exist in this tracking store")
    ids = [e.experiment_id for e in experiments]
    runs = client.search_runs(ids, filter_string="tags.`sweep.role` = 'parent'",
                              order_by=["attributes.start_time DESC"]) if ids else []
    for run in runs:
        if parent in (run.data.tags.get("sweep.study"), run.info.run_name):
            return run
    known = ", ".join(sorted({r.data.tags.get("sweep.study", "?") for r in runs})) or "none"
    raise CompareError(f"no sweep {parent!r} in this tracking store (sweeps: {known}); pass PARENT=<study name or "
                       f"parent run id> as `make sweep` printed it")


def sweep_trials(client, parent) -> tuple[list[dict], dict]:
    """(trials, sweep facts) of a parent run: one dict per child run, best objective first."""
    p = parent.data.params
    facts = {"objective": p.get("sweep.objective", "val_accuracy"), "direction": p.get("sweep.direction", "maximize"),
             "space": json.loads(p.get("sweep.space", "{}")), "study": parent.data.tags.get("sweep.study")}
    children = client.search_runs([parent.info.experiment_id],
                                  filter_string=f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    trials = []
    for run in children:
        rid, tags = run.info.run_id, run.data.tags

        def history(key):
            return [m.value for m in sorted(client.get_metric_history(rid, key), key=lambda m: m.step)]

        curves = {k: history(k) for k in ("loss", "val_loss", "accuracy", "val_accuracy", "mae", "val_mae",
                                          "val_rmse")}
        values = [v for v in curves.get(facts["objective"], []) if not math.isnan(v)]
        pick = max if facts["direction"] == "maximize" else min
        metrics = run.data.metrics
        trials.append({"trial": int(tags.get("sweep.trial", -1)), "run": run.info.run_name, "run_id": rid,
                       "state": tags.get("sweep.state", run.info.status), "epochs": len(curves["loss"]),
                       "value": pick(values) if values else None,
                       "task": "regression" if curves["mae"] or "test_mae" in metrics else "classification",
                       **{k: metrics.get(k) for k in ("test_accuracy", "test_mae", "test_rmse")},
                       "version": tags.get("registry.version"), "params": json.loads(tags.get("sweep.params", "{}")),
                       "curves": curves})
    sign = -1 if facts["direction"] == "maximize" else 1
    trials.sort(key=lambda t: (t["state"] != "COMPLETE" or t["value"] is None, sign * (t["value"] or 0), t["trial"]))
    return trials, facts


# The test figures of a sweep's table by task: (header, trial key, format).
_SWEEP_TEST_COLUMNS = {"classification": (("test acc", "test_accuracy", "{:.4f}"),),
                       "regression": (("test mae", "test_mae", "{:.4g}"), ("test rmse", "test_rmse", "{:.4g}"))}


def format_trials(trials: Sequence[dict], facts: dict) -> str:
    """The trials table: trial, state, epochs, the objective, the test figures of the trials' task
    (accuracy; a regression's MAE and RMSE), registered version and the searched keys.

    Example::

        trials, facts = sweep_trials(client, find_parent(client, "setnet-digits-default"))
        print(format_trials(trials, facts))
    """
    keys = list(facts["space"]) or sorted({k for t in trials for k in t["params"]})
    tasks = {t.get("task", "classification") for t in trials} or {"classification"}
    tests = [c for task in ("classification", "regression") if task in tasks for c in _SWEEP_TEST_COLUMNS[task]]
    head = ["trial", "state", "epochs", facts["objective"], *[h for h, _, _ in tests], "version", *keys]
    rows = [head]
    for t in trials:
        rows.append([str(t["trial"]), t["state"], str(t["epochs"]),
                     "-" if t["value"] is None else f"{t['value']:.4f}",
                     *["-" if t.get(k) is None else fmt.format(t[k]) for _, k, fmt in tests], t["version"] or "-",
                     *[_short(t["params"].get(k)) for k in keys]])
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _short(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def param_importances(trials: Sequence[dict], facts: dict) -> dict[str, float]:
    """Optuna's fANOVA importances of the searched keys for the objective, from the completed trials."""
    import optuna

    done = [t for t in trials if t["state"] == "COMPLETE" and t["value"] is not None]
    dists = {}
    for key, spec in facts["space"].items():
        if "choices" in spec:
            dists[key] = optuna.distributions.CategoricalDistribution(spec["choices"])
        elif spec.get("int"):
            dists[key] = optuna.distributions.IntDistribution(spec["low"], spec["high"], log=spec["log"],
                                                              step=spec["step"] or 1)
        else:
            dists[key] = optuna.distributions.FloatDistribution(spec["low"], spec["high"], log=spec["log"],
                                                                step=spec["step"])
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction=facts["direction"])
    for t in done:
        params = {k: v for k, v in t["params"].items() if k in dists}
        study.add_trial(optuna.trial.create_trial(params=params, distributions={k: dists[k] for k in params},
                                                  value=t["value"]))
    if len(done) < 2:
        raise CompareError(f"parameter importances need at least 2 completed trials, this sweep has {len(done)}")
    # fANOVA, seeded: the same trials give the same importances (Optuna's default evaluator may change).
    evaluator = optuna.importance.FanovaImportanceEvaluator(seed=0)
    return dict(optuna.importance.get_param_importances(study, evaluator=evaluator))


def sweep_figures(trials: Sequence[dict], facts: dict, importances: dict | None, out_dir: pathlib.Path) -> list:
    """Parallel coordinates, importances and the best two trials' learning curves, as PNGs."""
    import numpy as np
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    keys = list(facts["space"])
    done = [t for t in trials if t["value"] is not None]
    if keys and done:
        fig = Figure(figsize=(2.2 * (len(keys) + 1) + 2, 5))
        ax = fig.subplots()
        columns = []
        for key in keys:
            spec = facts["space"][key]
            raw = [t["params"].get(key) for t in done]
            if "choices" in spec:
                labels = [str(c) for c in spec["choices"]]
                columns.append(([labels.index(str(v)) / max(1, len(labels) - 1) if str(v) in labels else np.nan
                                 for v in raw], labels, key))
            else:
                lo, hi = spec["low"], spec["high"]
                f = (lambda v: (math.log(v) - math.log(lo)) / (math.log(hi) - math.log(lo))) if spec["log"] else \
                    (lambda v: (v - lo) / (hi - lo))
                columns.append(([f(v) if v is not None else np.nan for v in raw], [_short(lo), _short(hi)], key))
        values = np.array([t["value"] for t in done], float)
        span = values.max() - values.min()
        columns.append((list((values - values.min()) / span) if span else [0.5] * len(values),
                        [_short(values.min()), _short(values.max())], facts["objective"]))
        import matplotlib

        colour = matplotlib.colormaps["viridis"]
        rank = (values - values.min()) / span if span else np.full(len(values), 0.5)
        if facts["direction"] == "minimize":
            rank = 1 - rank
        xs = np.arange(len(columns))
        for i, t in enumerate(done):
            ax.plot(xs, [c[0][i] for c in columns], "-o", color=colour(float(rank[i])), alpha=0.8, lw=1.5,
                    label=f"trial {t['trial']}")
        for x, (_, ticks, name) in zip(xs, columns):
            ax.axvline(x, color="0.6", lw=0.8)
            if len(ticks) > 2 or name in facts["space"] and "choices" in facts["space"][name]:
                for j, tick in enumerate(ticks):
                    ax.annotate(tick, (x, j / max(1, len(ticks) - 1)), xytext=(3, 0), textcoords="offset points",
                                fontsize=7, va="center")
            else:
                ax.annotate(ticks[0], (x, 0), xytext=(3, -10), textcoords="offset points", fontsize=7)
                ax.annotate(ticks[-1], (x, 1), xytext=(3, 4), textcoords="offset points", fontsize=7)
        ax.set_xticks(xs, [c[2] for c in columns], rotation=20, ha="right", fontsize=8)
        ax.set_yticks([])
        ax.set_ylim(-0.08, 1.08)
        ax.set_title(f"{facts['study']}: {len(done)} trial(s); colour: {facts['objective']} (bright = better)")
        if len(done) <= 12:
            ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))
        fig.tight_layout()
        written.append(out_dir / "parallel_coordinates.png")
        fig.savefig(written[-1], dpi=110)
    if importances:
        fig = Figure(figsize=(7, 0.5 * len(importances) + 1.5))
        ax = fig.subplots()
        names = list(importances)[::-1]
        ax.barh(names, [importances[n] for n in names], color="C0")
        ax.set_xlabel(f"importance for {facts['objective']} (fANOVA, sums to 1)")
        ax.set_title(f"{facts['study']}: parameter importances")
        fig.tight_layout()
        written.append(out_dir / "param_importances.png")
        fig.savefig(written[-1], dpi=110)
    best_two = [t for t in trials if t["state"] == "COMPLETE" and t["value"] is not None][:2]
    if best_two:
        fig = Figure(figsize=(11, 7))
        axes = fig.subplots(2, len(best_two), squeeze=False)
        for col, (t, role) in enumerate(zip(best_two, ("best", "runner-up"))):
            for row, key in enumerate(("loss", "mae" if t.get("task") == "regression" else "accuracy")):
                ax = axes[row][col]
                for name, style in ((key, "o-"), (f"val_{key}", "s-")):
                    ys = t["curves"].get(name) or []
                    if ys:
                        ax.plot(range(1, len(ys) + 1), ys, style, label=name.replace("val_", "validation "))
                ax.set_xlabel("epoch")
                ax.xaxis.set_major_locator(MaxNLocator(integer=True))
                ax.set_ylabel(key)
                ax.grid(alpha=0.3)
                ax.legend(fontsize=8)
                if row == 0:
                    ax.set_title(f"{role}: trial {t['trial']} ({facts['objective']} {t['value']:.4f})", fontsize=9)
        fig.tight_layout()
        written.append(out_dir / "best_learning_curves.png")
        fig.savefig(written[-1], dpi=110)
    return written


def compare_sweep(parent: str, experiment: str | None = None, *, tracking_uri: str | None = None,
                  runs_dir: str | pathlib.Path = DEFAULT_RUNS_DIR, out: str | pathlib.Path | None = None,
                  printer: Callable[[str], None] = print) -> dict:
    """A sweep's trials table (best objective first), parallel-coordinates plot, parameter
    importances and the best two trials' learning curves, logged to the parent run (folder
    ``compare/`` of its artifacts) so that the MLflow UI shows them.

    Args:
        parent: the parent run's id, the study name or the parent run's name (``sweep-<study>``).
        experiment: limit the search to this experiment.
        tracking_uri, runs_dir: the store, as for `compare`.
        out: folder for the files (default ``<runs_dir>/<experiment>/sweep-<study>/compare``).

    Returns:
        dict with ``parent_run_id``, ``trials`` (dicts: trial, state, value, params, curves ...),
        ``importances`` (None when there are too few trials), ``table`` and ``files``.

    Example::

        result = compare_sweep("setnet-digits-default")
        best = result["trials"][0]
    """
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    uri = store_uri(tracking_uri, runs_dir)
    client = MlflowClient(tracking_uri=uri)
    try:
        run = find_parent(client, parent, experiment)
        trials, facts = sweep_trials(client, run)
    except MlflowException as e:
        raise CompareError(f"cannot read the tracking store at {uri}: {str(e).splitlines()[0][:300]}") from None
    if not trials:
        raise CompareError(f"sweep {facts['study']!r} (run {run.info.run_id}) has no trials yet")
    try:
        importances = param_importances(trials, facts)
        note = ""
    except Exception as e:  # too few or identical trials: the rest of the comparison still stands
        importances, note = None, f"parameter importances: not computed ({str(e).splitlines()[0][:200]})"
    exp_name = client.get_experiment(run.info.experiment_id).name
    out_dir = pathlib.Path(out) if out else pathlib.Path(runs_dir) / exp_name / f"sweep-{facts['study']}" / "compare"
    files = sweep_figures(trials, facts, importances, out_dir)
    table = format_trials(trials, facts)
    (out_dir / "trials.txt").write_text(table + "\n")
    (out_dir / "trials.json").write_text(json.dumps(
        {"objective": facts["objective"], "direction": facts["direction"], "importances": importances,
         "trials": [{k: v for k, v in t.items() if k != "curves"} for t in trials]}, indent=1))
    files += [out_dir / "trials.txt", out_dir / "trials.json"]
    for path in files:
        client.log_artifact(run.info.run_id, str(path), "compare")
    lines = [f"sweep {facts['study']!r} (parent run {run.info.run_id}, experiment {exp_name!r}) at {uri}: "
             f"{len(trials)} trial(s), {facts['direction']} {facts['objective']}", table]
    if importances:
        lines.append("parameter importances: " + ", ".join(f"{k} {v:.2f}" for k, v in importances.items()))
    elif note:
        lines.append(note)
    lines.append(f"plots in {out_dir} and in the parent run's artifacts (compare/)")
    printer("\n".join(lines))
    return {"parent_run_id": run.info.run_id, "trials": trials, "importances": importances, "table": table,
            "files": files}


# --------------------------------------------------------------------------- the UI


def server_env() -> dict:
    # Job execution (MLflow 3's background job runner, huey) is for GenAI evaluation jobs; off, the
    # server is one light process.
    return {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}


def server_command(uri: str, runs_dir: str | pathlib.Path, host: str = "127.0.0.1", port: int = 5000) -> list[str]:
    """``mlflow server`` (UI and REST API, one worker) on a database store; artifacts of runs logged
    through it go to ``<runs_dir>/mlartifacts``, next to those of the embedded store."""
    if uri.startswith(("http://", "https://", "databricks")):
        raise CompareError(f"the tracking store is the server at {uri}: it already serves the MLflow UI, "
                           f"open it in a browser")
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
            uri = store_uri(args.tracking_uri, args.runs_dir)
            command = server_command(uri, args.runs_dir, args.host, args.port)
            print(f"MLflow UI on http://{args.host}:{args.port} for {uri} (Ctrl-C stops it)", flush=True)
            os.execve(command[0], command, server_env())
        if args.parent:
            compare_sweep(args.parent, args.experiment, tracking_uri=args.tracking_uri, runs_dir=args.runs_dir,
                          out=args.out)
        else:
            compare(args.experiment, tracking_uri=args.tracking_uri, runs_dir=args.runs_dir, out=args.out,
                    extra_params=args.params)
    except CompareError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
