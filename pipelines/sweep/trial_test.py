"""One trial: its objective, its own sampler seed, Optuna's reports and pruning, a retry that finds
its training done, and the lock that keeps two attempts out of one run folder."""

import pathlib

import pytest

from pipelines.sweep import driver
from pipelines.sweep import trial as sweep_trial
from pipelines.sweep.__main__ import _parser
from pipelines.sweep.space import make_sampler
from pipelines.sweep.study import TRIAL_ATTR, Sweep
from pipelines.tracking import read_json
from tests.support.sweep import write_regression_table

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _context(tmp_path, sweep_text: str, config: str = "digits.yaml", *overrides: str) -> Sweep:
    sweep_file = tmp_path / "s.yaml"
    sweep_file.write_text(sweep_text)
    return Sweep(_parser().parse_args(["--config", str(ROOT / "configs" / config), "--sweep", str(sweep_file),
                                       "--set", f"runs_dir={tmp_path / 'runs'}", "mlflow.enabled=false", *overrides]))


def test_objective_is_the_best_epoch_in_the_sweeps_direction():
    history = [{"val_accuracy": 0.5, "val_loss": 1.0}, {"val_accuracy": 0.7, "val_loss": 0.8},
               {"val_accuracy": 0.6, "val_loss": float("nan")}]
    assert sweep_trial.objective_value(history, "val_accuracy", "maximize") == 0.7
    assert sweep_trial.objective_value(history, "val_loss", "minimize") == 0.8


def test_parallel_trial_processes_draw_different_points():
    # Each trial process builds its own sampler: two processes started together must not share a seed.
    spec = {"seed": 0, "sampler": "random", "space": {}}
    salts = {sweep_trial._salt(f"host|{seq}@123.456") for seq in range(1, 5)}
    assert len(salts) == 4
    assert sweep_trial._salt("host|3@1.2") == sweep_trial._salt("host|3@9.9")  # the pid/time part does not matter
    assert make_sampler(spec, 1)._rng.rng.random() != make_sampler(spec, 2)._rng.rng.random()


def _two_trials(ctx, monkeypatch, curves, epoch_logs, result):
    """Two trials of ``ctx`` with a median pruner, each a stand-in for `pipelines.train.train` that
    does what it does with its callbacks (on_epoch_end after every epoch): epoch e of trial t logs
    ``epoch_logs(curves[t][e])`` and the training returns ``result``. Returns the two Optuna trials,
    the printed lines and the configs trained."""
    import optuna

    from pipelines import train as train_module

    trained = []

    def fake_train(cfg, callbacks=(), printer=print):
        trained.append(cfg)
        history = []
        for epoch, value in enumerate(curves[len(trained) - 1]):
            history.append(epoch_logs(value))
            for cb in callbacks:
                cb.on_epoch_end(epoch, history[-1])
        return {"history": history, **result}

    monkeypatch.setattr(train_module, "train", fake_train)
    study = optuna.create_study(direction=ctx.sweep["direction"],
                                pruner=optuna.pruners.MedianPruner(n_startup_trials=1, n_warmup_steps=0))
    lines = []
    study.optimize(lambda t: sweep_trial.run_trial(ctx, t, "host|1@1.2", printer=lines.append), n_trials=2)
    return study, lines, trained


def test_a_trial_reports_every_epoch_and_the_median_pruner_stops_a_worse_one(tmp_path, monkeypatch):
    ctx = _context(tmp_path, "space: {model.global_pool: [max, mean]}")
    assert ctx.sweep["direction"] == "maximize"
    study, lines, trained = _two_trials(ctx, monkeypatch, [[0.5, 0.6, 0.7], [0.1, 0.2, 0.3]],
                                        lambda value: {"val_accuracy": value, "loss": 1.0},
                                        {"test_accuracy": 0.5, "export_path": None})
    first, second = study.trials
    assert first.state.name == "COMPLETE" and first.value == 0.7
    assert first.intermediate_values == {1: 0.5, 2: 0.6, 3: 0.7}
    assert second.state.name == "PRUNED" and second.intermediate_values == {1: 0.1}
    assert any("trial 1 pruned: val_accuracy 0.1000 after epoch 1" in line for line in lines)
    # Each trial trained the base config with its own parameters, in its own run folder.
    assert [c.model.global_pool for c in trained] == [first.params["model.global_pool"],
                                                      second.params["model.global_pool"]]
    assert [c.run_name for c in trained] == [f"{ctx.study_name}-t0", f"{ctx.study_name}-t1"]
    assert first.user_attrs["run_dir"] == str(tmp_path / "runs" / "setnet-digits" / f"{ctx.study_name}-t0")


def test_a_regression_trial_minimises_val_mae_and_keeps_its_test_mae_and_rmse(tmp_path, monkeypatch):
    table = write_regression_table(tmp_path / "shapes.parquet")
    ctx = _context(tmp_path, "space: {train.loss: [mse, huber]}", "own_regression.yaml", f"data.path={table}")
    assert (ctx.sweep["objective"], ctx.sweep["direction"]) == ("val_mae", "minimize")
    # What pipelines.train.train logs for a regression: loss and mae, val_loss, val_mae, val_rmse; the
    # second trial's error is higher: worse.
    study, lines, _ = _two_trials(
        ctx, monkeypatch, [[0.5, 0.4, 0.3], [0.9, 0.8, 0.7]],
        lambda value: {"loss": 2.0, "mae": 1.0, "val_loss": 2.0 * value, "val_mae": value, "val_rmse": 1.5},
        {"test_loss": 0.2, "test_mae": 0.25, "test_rmse": 0.35, "test_accuracy": None, "export_path": None})
    first, second = study.trials
    assert first.state.name == "COMPLETE" and first.value == 0.3
    assert first.intermediate_values == {1: 0.5, 2: 0.4, 3: 0.3}
    assert second.state.name == "PRUNED" and second.intermediate_values == {1: 0.9}
    assert any("trial 1 pruned: val_mae 0.9000 after epoch 1 is worse than the median" in line for line in lines)
    assert (first.user_attrs["test_mae"], first.user_attrs["test_rmse"]) == (0.25, 0.35)
    assert first.user_attrs["test_accuracy"] is None
    summary = driver.summarize(ctx, study, finished=True)
    assert summary == read_json(ctx.folder / "best_trial.json")
    assert (summary["objective"], summary["direction"], summary["value"]) == ("val_mae", "minimize", 0.3)
    assert (summary["test_mae"], summary["test_rmse"], summary["test_accuracy"]) == (0.25, 0.35, None)


@pytest.mark.slow
def test_a_real_regression_trial_reports_its_val_mae_every_epoch(tmp_path):
    # The names the sweep accepts are the names training logs: one real (tiny) regression training.
    import optuna

    table = write_regression_table(tmp_path / "shapes.parquet", sets=24, points=12)
    ctx = _context(tmp_path, "pruner: none\nspace: {train.loss: [huber]}", "own_regression.yaml",
                   f"data.path={table}", f"data.data_dir={tmp_path / 'tfds'}", "data.num_points=12",
                   "data.batch_size=4", "train.epochs=2", "train.steps_per_epoch=2", "train.xla=false",
                   "export.enabled=false", "model.blocks=[{kind: linear, units: 8}]", "model.head=[8]")
    study = optuna.create_study(direction=ctx.sweep["direction"])
    study.optimize(lambda t: sweep_trial.run_trial(ctx, t, "host|1@1.2", printer=lambda *_: None), n_trials=1)
    (done,) = study.trials
    history = read_json(pathlib.Path(done.user_attrs["run_dir"]) / "history.json")["epochs"]
    assert done.state.name == "COMPLETE" and done.value == min(h["val_mae"] for h in history)
    assert sorted(done.intermediate_values) == [1, 2]
    assert {"loss", "mae", "val_loss", "val_mae", "val_rmse"} <= set(history[0])
    assert done.user_attrs["test_mae"] > 0 and done.user_attrs["test_rmse"] >= done.user_attrs["test_mae"]


def test_a_retry_of_a_trial_that_finished_after_all_reuses_its_result(tmp_path, monkeypatch):
    # A trial taken for dead (late heartbeat) that then finished: its retry must not train again.
    import optuna

    from pipelines import train as train_module
    from pipelines.tracking import write_json

    ctx = _context(tmp_path, "space: {model.global_pool: [max, mean]}")
    run_dir = tmp_path / "runs" / "setnet-digits" / f"{ctx.study_name}-t0"
    run_dir.mkdir(parents=True)
    write_json(run_dir / "history.json", {"completed": True, "test": {"accuracy": 0.4},
                                          "epochs": [{"val_accuracy": 0.3}, {"val_accuracy": 0.35}]})
    write_json(run_dir / "invariance.json", {"export": "/x/exports/m/7"})
    monkeypatch.setattr(train_module, "train", lambda *a, **k: pytest.fail("trained again"))
    dist = {"model.global_pool": optuna.distributions.CategoricalDistribution(["max", "mean"])}
    study = optuna.create_study(direction="maximize")
    study.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.FAIL, params={"model.global_pool": "max"},
                                              distributions=dist, user_attrs={TRIAL_ATTR: 0}))
    study.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.WAITING,
                                              params={"model.global_pool": "max"}, distributions=dist,
                                              user_attrs={TRIAL_ATTR: 0},
                                              system_attrs={"failed_trial": 0, "retry_history": [0]}))
    lines = []
    study.optimize(lambda t: sweep_trial.run_trial(ctx, t, "host|2@1.2", printer=lines.append), n_trials=1)
    retry = study.trials[1]
    assert retry.state.name == "COMPLETE" and retry.value == 0.35
    assert retry.user_attrs["export_path"] == "/x/exports/m/7" and retry.user_attrs["test_accuracy"] == 0.4
    assert any("finished by an earlier attempt" in line for line in lines)


def test_two_attempts_of_a_trial_never_share_its_run_folder(tmp_path):
    import fcntl
    import threading

    held = open(tmp_path / ".trial.lock", "w")
    fcntl.flock(held, fcntl.LOCK_EX)  # an earlier attempt, still training
    lines, got = [], []
    waiter = threading.Thread(target=lambda: got.append(sweep_trial._hold_run_folder(tmp_path, lines.append)), daemon=True)
    waiter.start()
    waiter.join(timeout=1.0)
    assert waiter.is_alive() and not got  # blocked while the folder is in use
    held.close()  # the earlier attempt ends (a kill -9 closes it the same way)
    waiter.join(timeout=30)
    assert got and "still in use by an earlier attempt" in lines[0]
