"""The sweep file: what it accepts, and one line naming the file and key for what it does not.
(The sweep itself, killed and resumed against a real MLflow server: tests/training/test_sweep.py.)"""

import pathlib

import pytest
import yaml

from pipelines import sweep as sw
from pipelines.config import load_config

ROOT = pathlib.Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def base():
    return sw.plain_config(load_config(ROOT / "configs" / "digits.yaml"))


def _write(tmp_path, text: str) -> pathlib.Path:
    path = tmp_path / "s.yaml"
    path.write_text(text)
    return path


def test_shipped_sweep_loads_over_the_default_and_digits_configs():
    for config in ("default.yaml", "digits.yaml"):
        base = sw.plain_config(load_config(ROOT / "configs" / config))
        got = sw.load_sweep(ROOT / "sweeps" / "default.yaml", base)
        assert got["objective"] == "val_accuracy" and got["direction"] == "maximize" and got["sampler"] == "tpe"
        assert got["space"]["train.learning_rate"] == {"low": 0.0003, "high": 0.01, "log": True, "step": None,
                                                       "int": False}
        assert got["space"]["model.blocks.1.rank"] == {"choices": [4, 8, 16, 32]}
        assert {"model.blocks.0.units", "model.global_pool", "model.blocks.1.pooling"} <= set(got["space"])


def test_defaults_and_distributions(tmp_path, base):
    path = _write(tmp_path, "objective: val_loss\nsampler: grid\npruner: none\nspace:\n"
                            "  model.blocks.0.units: {low: 8, high: 24, step: 8}\n"
                            "  model.global_pool: [max, mean]\n")
    got = sw.load_sweep(path, base)
    assert got["direction"] == "minimize" and got["pruner"] is None and got["trials"] == 10
    assert sw.grid_values(got["space"]["model.blocks.0.units"]) == [8, 16, 24]
    assert sw.grid_values(got["space"]["model.global_pool"]) == ["max", "mean"]
    assert sw.grid_size(got) == 6


def test_yaml_1_2_numbers_are_numbers_as_in_a_config(tmp_path, base):
    got = sw.load_sweep(_write(tmp_path, "space: {train.learning_rate: {low: 1e-4, high: 1E-2, log: true}}"), base)
    spec = got["space"]["train.learning_rate"]
    assert (spec["low"], spec["high"]) == (1e-4, 1e-2)


@pytest.mark.parametrize("text, message", [
    ("objectve: val_loss\nspace: {seed: [1, 2]}", r"s\.yaml: unknown key 'objectve'; did you mean 'objective'\?"),
    ("space: {model.blocks.0.unit: [8, 16]}",
     r"space key 'model\.blocks\.0\.unit' is not a key of the config; did you mean 'model\.blocks\.0\.units'\?"),
    ("space: {model.blocks.7.units: [8, 16]}", r"space key 'model\.blocks\.7\.units' is not a key of the config"),
    ("space: {train: [1, 2]}", r"space key 'train' is a section; name one of its keys"),
    ("space: {train.learning_rate: {low: 0.1, high: 0.01}}", r"space\.train\.learning_rate: low \(0\.1\) must be less"),
    ("space: {train.learning_rate: {low: 0.0, high: 0.01, log: true}}", r"log-uniform range needs low > 0"),
    ("space: {train.learning_rate: {low: '1e-4', high: 0.01}}", r"low and high must be numbers"),
    ("space: {train.learning_rate: {low: 0.001}}", r"a range needs both low and high"),
    ("space: {train.learning_rate: {choices: [0.1], low: 1}}", r"choices cannot be combined with low"),
    ("space: {train.learning_rate: {mean: 0.1}}", r"unknown key 'mean'"),
    ("space: {model.global_pool: [max, median]}",
     r"space\.model\.global_pool: the value 'median' is not valid for the config: .*must be one of"),
    ("space: {train.epochs: {low: 0, high: 3}}", r"space\.train\.epochs: the value 0 is not valid for the config"),
    ("sampler: grid\nspace: {train.learning_rate: {low: 0.001, high: 0.01}}", r"grid search needs choices"),
    ("sampler: bayes\nspace: {seed: [1, 2]}", r"sampler must be one of tpe, random, grid"),
    ("objective: test_accuracy\nspace: {seed: [1, 2]}", r"objective 'test_accuracy' is not a per-epoch metric"),
    ("pruner: {kind: hyperband}\nspace: {seed: [1, 2]}", r"pruner\.kind must be median"),
    ("trials: 0\nspace: {seed: [1, 2]}", r"trials must be an integer >= 1"),
    ("space: []", r"'space:' must map config keys to distributions"),
    ("- a\n- b", r"the top level must be a mapping"),
    ("space: {seed: [1, 1]}", r"choices repeat a value"),
])
def test_bad_sweep_files_name_the_file_and_key(tmp_path, base, text, message):
    with pytest.raises(sw.SweepError, match=message) as info:
        sw.load_sweep(_write(tmp_path, text), base)
    assert str(tmp_path / "s.yaml") in str(info.value) and "\n" not in str(info.value)


def test_cli_bad_input_is_one_line_and_exit_2(tmp_path, capsys):
    path = _write(tmp_path, "space: {model.blocks.0.unit: [8, 16]}")
    assert sw.main(["--config", str(ROOT / "configs" / "digits.yaml"), "--sweep", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and "did you mean 'model.blocks.0.units'" in err
    assert sw.main(["--config", str(ROOT / "configs" / "digits.yaml"), "--sweep", str(tmp_path / "none.yaml")]) == 2
    assert "not found (shipped sweeps in sweeps/: default.yaml" in capsys.readouterr().err
    assert sw.main(["--sweep", str(ROOT / "sweeps" / "default.yaml"), "--set", "train.epoch=2"]) == 2
    assert "train.epoch" in capsys.readouterr().err
    assert sw.main(["--sweep", str(ROOT / "sweeps" / "default.yaml"), "--parallel", "0"]) == 2
    assert "--parallel must be >= 1" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_trial_configs_set_list_items_and_stay_valid(tmp_path, base):
    tree = yaml.safe_load(yaml.safe_dump(base))
    sw.set_key(tree, "model.blocks.1.rank", 4)
    sw.set_key(tree, "train.learning_rate", 0.002)
    path = tmp_path / "trial.yaml"
    path.write_text(yaml.safe_dump(tree))
    cfg = load_config(path)
    assert cfg.model.blocks[1].rank == 4 and cfg.train.learning_rate == 0.002
    assert cfg.model.blocks[0].units == base["model"]["blocks"][0]["units"]


def test_objective_is_the_best_epoch_in_the_sweeps_direction():
    history = [{"val_accuracy": 0.5, "val_loss": 1.0}, {"val_accuracy": 0.7, "val_loss": 0.8},
               {"val_accuracy": 0.6, "val_loss": float("nan")}]
    assert sw.objective_value(history, "val_accuracy", "maximize") == 0.7
    assert sw.objective_value(history, "val_loss", "minimize") == 0.8


def test_parallel_trial_processes_draw_different_points():
    # Each trial process builds its own sampler: two processes started together must not share a seed.
    spec = {"seed": 0, "sampler": "random", "space": {}}
    salts = {sw._salt(f"host|{seq}@123.456") for seq in range(1, 5)}
    assert len(salts) == 4
    assert sw._salt("host|3@1.2") == sw._salt("host|3@9.9")  # the pid/time part does not matter
    assert sw.make_sampler(spec, 1)._rng.rng.random() != sw.make_sampler(spec, 2)._rng.rng.random()


def test_storage_url_password_is_not_logged():
    assert sw._safe_url("postgresql://me:secret@db/optuna") == "postgresql://me:***@db/optuna"
    assert sw._safe_url("sqlite:////tmp/optuna.db") == "sqlite:////tmp/optuna.db"


def test_a_trial_reports_every_epoch_and_the_median_pruner_stops_a_worse_one(tmp_path, monkeypatch):
    import optuna

    from pipelines import train as train_module

    sweep_file = _write(tmp_path, "space: {model.global_pool: [max, mean]}")
    args = sw._parser().parse_args(["--config", str(ROOT / "configs" / "digits.yaml"), "--sweep", str(sweep_file),
                                    "--set", f"runs_dir={tmp_path / 'runs'}", "mlflow.enabled=false"])
    ctx = sw.Sweep(args)
    curves = [[0.5, 0.6, 0.7], [0.1, 0.2, 0.3]]
    trained = []

    def fake_train(cfg, callbacks=(), printer=print):
        # What pipelines.train.train does with its callbacks: on_epoch_end after every epoch.
        trained.append(cfg)
        history = []
        for epoch, value in enumerate(curves[len(trained) - 1]):
            history.append({"val_accuracy": value, "loss": 1.0})
            for cb in callbacks:
                cb.on_epoch_end(epoch, history[-1])
        return {"history": history, "test_accuracy": 0.5, "export_path": None}

    monkeypatch.setattr(train_module, "train", fake_train)
    study = optuna.create_study(direction="maximize",
                                pruner=optuna.pruners.MedianPruner(n_startup_trials=1, n_warmup_steps=0))
    lines = []
    study.optimize(lambda t: sw.run_trial(ctx, t, "host|1@1.2", printer=lines.append), n_trials=2)
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


def test_a_retry_of_a_trial_that_finished_after_all_reuses_its_result(tmp_path, monkeypatch):
    # A trial taken for dead (late heartbeat) that then finished: its retry must not train again.
    import optuna

    from pipelines import train as train_module
    from pipelines.tracking import write_json

    sweep_file = _write(tmp_path, "space: {model.global_pool: [max, mean]}")
    args = sw._parser().parse_args(["--config", str(ROOT / "configs" / "digits.yaml"), "--sweep", str(sweep_file),
                                    "--set", f"runs_dir={tmp_path / 'runs'}", "mlflow.enabled=false"])
    ctx = sw.Sweep(args)
    run_dir = tmp_path / "runs" / "setnet-digits" / f"{ctx.study_name}-t0"
    run_dir.mkdir(parents=True)
    write_json(run_dir / "history.json", {"completed": True, "test": {"accuracy": 0.4},
                                          "epochs": [{"val_accuracy": 0.3}, {"val_accuracy": 0.35}]})
    write_json(run_dir / "invariance.json", {"export": "/x/exports/m/7"})
    monkeypatch.setattr(train_module, "train", lambda *a, **k: pytest.fail("trained again"))
    dist = {"model.global_pool": optuna.distributions.CategoricalDistribution(["max", "mean"])}
    study = optuna.create_study(direction="maximize")
    study.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.FAIL, params={"model.global_pool": "max"},
                                              distributions=dist, user_attrs={sw.TRIAL_ATTR: 0}))
    study.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.WAITING,
                                              params={"model.global_pool": "max"}, distributions=dist,
                                              user_attrs={sw.TRIAL_ATTR: 0},
                                              system_attrs={"failed_trial": 0, "retry_history": [0]}))
    lines = []
    study.optimize(lambda t: sw.run_trial(ctx, t, "host|2@1.2", printer=lines.append), n_trials=1)
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
    waiter = threading.Thread(target=lambda: got.append(sw._hold_run_folder(tmp_path, lines.append)), daemon=True)
    waiter.start()
    waiter.join(timeout=1.0)
    assert waiter.is_alive() and not got  # blocked while the folder is in use
    held.close()  # the earlier attempt ends (a kill -9 closes it the same way)
    waiter.join(timeout=30)
    assert got and "still in use by an earlier attempt" in lines[0]
