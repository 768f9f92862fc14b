"""A sweep's report, read through MLflow: ``make compare PARENT=<study>``
(``python -m pipelines.compare --parent <study>``, docs/tracking.md).

The trials table (best objective first), a parallel-coordinates plot, Optuna's parameter
importances and the best two trials' learning curves, written to a folder and logged to the sweep's
parent run. Everything comes from the parent run and its child runs (params, tags, metric
histories), so it works on any store, without the Optuna database.

Example:

    from pipelines.sweep.report import compare_sweep

    result = compare_sweep("setnet-digits-default", tracking_uri="http://127.0.0.1:5000")
    best = result["trials"][0]   # the best trial: its params, objective value, curves
"""

from __future__ import annotations

import json
import math
import pathlib
from typing import Callable, Sequence

from pipelines.compare import DEFAULT_RUNS_DIR, CompareError
from pipelines.tracking_store import error_line, existing_store_uri, safe_uri


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
        tracking_uri, runs_dir: the store, as for `pipelines.compare.compare`.
        out: folder for the files (default ``<runs_dir>/<experiment>/sweep-<study>/compare``).

    Returns:
        dict with ``parent_run_id``, ``trials`` (dicts: trial, state, value, params, curves ...),
        ``importances`` (None when there are too few trials), ``table`` and ``files``.

    Raises:
        pipelines.tracking_store.TrackingStoreError: the embedded store does not exist.
        pipelines.compare.CompareError: no such sweep (the message lists those that exist), no trials
            yet, or the store cannot be read.

    Example::

        result = compare_sweep("setnet-digits-default")
        best = result["trials"][0]
    """
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    uri = existing_store_uri(tracking_uri, runs_dir)
    client = MlflowClient(tracking_uri=uri)
    try:
        run = find_parent(client, parent, experiment)
        trials, facts = sweep_trials(client, run)
    except MlflowException as e:
        raise CompareError(f"cannot read the tracking store at {safe_uri(uri)}: {error_line(e, uri, 300)}") from None
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
    lines = [f"sweep {facts['study']!r} (parent run {run.info.run_id}, experiment {exp_name!r}) at "
             f"{safe_uri(uri)}: {len(trials)} trial(s), {facts['direction']} {facts['objective']}", table]
    if importances:
        lines.append("parameter importances: " + ", ".join(f"{k} {v:.2f}" for k, v in importances.items()))
    elif note:
        lines.append(note)
    lines.append(f"plots in {out_dir} and in the parent run's artifacts (compare/)")
    printer("\n".join(lines))
    return {"parent_run_id": run.info.run_id, "trials": trials, "importances": importances, "table": table,
            "files": files}
