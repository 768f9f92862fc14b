"""The sweep file: what it accepts, and one line naming the file and key for what it does not.
(The sweep itself, killed and resumed against a real MLflow server: tests/training/test_sweep.py.)"""

import pathlib

import pytest
import yaml

from pipelines.config import load_config
from pipelines.sweep import space
from tests.support.sweep import write_regression_table

ROOT = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def base():
    return space.plain_config(load_config(ROOT / "configs" / "digits.yaml"))


def _write(tmp_path, text: str) -> pathlib.Path:
    path = tmp_path / "s.yaml"
    path.write_text(text)
    return path


def test_shipped_sweep_loads_over_the_default_and_digits_configs():
    for config in ("default.yaml", "digits.yaml"):
        base = space.plain_config(load_config(ROOT / "configs" / config))
        got = space.load_sweep(ROOT / "sweeps" / "default.yaml", base)
        assert got["objective"] == "val_accuracy" and got["direction"] == "maximize" and got["sampler"] == "tpe"
        assert got["space"]["train.learning_rate"] == {"low": 0.0003, "high": 0.01, "log": True, "step": None,
                                                       "int": False}
        assert got["space"]["model.blocks.1.rank"] == {"choices": [4, 8, 16, 32]}
        assert {"model.blocks.0.units", "model.global_pool", "model.blocks.1.pooling"} <= set(got["space"])


def test_defaults_and_distributions(tmp_path, base):
    path = _write(tmp_path, "objective: val_loss\nsampler: grid\npruner: none\nspace:\n"
                            "  model.blocks.0.units: {low: 8, high: 24, step: 8}\n"
                            "  model.global_pool: [max, mean]\n")
    got = space.load_sweep(path, base)
    assert got["direction"] == "minimize" and got["pruner"] is None and got["trials"] == 10
    assert space.grid_values(got["space"]["model.blocks.0.units"]) == [8, 16, 24]
    assert space.grid_values(got["space"]["model.global_pool"]) == ["max", "mean"]
    assert space.grid_size(got) == 6


def test_yaml_1_2_numbers_are_numbers_as_in_a_config(tmp_path, base):
    got = space.load_sweep(_write(tmp_path, "space: {train.learning_rate: {low: 1e-4, high: 1E-2, log: true}}"), base)
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
    with pytest.raises(space.SweepError, match=message) as info:
        space.load_sweep(_write(tmp_path, text), base)
    assert str(tmp_path / "s.yaml") in str(info.value) and "\n" not in str(info.value)


def test_trial_configs_set_list_items_and_stay_valid(tmp_path, base):
    tree = yaml.safe_load(yaml.safe_dump(base))
    space.set_key(tree, "model.blocks.1.rank", 4)
    space.set_key(tree, "train.learning_rate", 0.002)
    path = tmp_path / "trial.yaml"
    path.write_text(yaml.safe_dump(tree))
    cfg = load_config(path)
    assert cfg.model.blocks[1].rank == 4 and cfg.train.learning_rate == 0.002
    assert cfg.model.blocks[0].units == base["model"]["blocks"][0]["units"]


# --------------------------------------------------------------------------- the objective and the task


@pytest.fixture(scope="module")
def regression_base(tmp_path_factory):
    table = write_regression_table(tmp_path_factory.mktemp("table") / "shapes.parquet")
    return space.plain_config(load_config(ROOT / "configs" / "own_regression.yaml", [f"data.path={table}"]))


def _never_asked():
    pytest.fail("the task was asked for an objective every task logs")


def test_the_datas_task_is_told_without_preparing_it(regression_base, tmp_path):
    digits = load_config(ROOT / "configs" / "digits.yaml", [f"data.data_dir={tmp_path / 'tfds'}"])
    assert space.dataset_task(digits) == "classification"
    own = load_config(ROOT / "configs" / "own_regression.yaml",
                      [f"data.path={regression_base['data']['path']}", f"data.data_dir={tmp_path / 'tfds'}"])
    assert space.dataset_task(own) == "regression"
    assert not (tmp_path / "tfds").exists()


def test_without_an_objective_a_sweep_optimises_the_tasks_metric(tmp_path, base, regression_base):
    got = space.load_sweep(ROOT / "sweeps" / "default.yaml", regression_base)
    assert (got["objective"], got["direction"]) == ("val_mae", "minimize")
    path = _write(tmp_path, "space: {train.loss: [mse, huber]}")
    assert space.load_sweep(path, base, task="classification")["objective"] == "val_accuracy"
    assert space.load_sweep(path, base, task=lambda: "regression")["objective"] == "val_mae"


@pytest.mark.parametrize("objective, direction", [("val_mae", "minimize"), ("val_rmse", "minimize"),
                                                  ("mae", "minimize"), ("val_loss", "minimize")])
def test_a_regression_sweep_takes_the_metrics_a_regression_logs(tmp_path, regression_base, objective, direction):
    got = space.load_sweep(_write(tmp_path, f"objective: {objective}\nspace: {{train.loss: [mse, huber]}}"),
                           regression_base)
    assert (got["objective"], got["direction"]) == (objective, direction)


def test_an_objective_every_task_logs_does_not_need_the_task(tmp_path, base):
    got = space.load_sweep(_write(tmp_path, "objective: loss\nspace: {seed: [1, 2]}"), base, task=_never_asked)
    assert (got["objective"], got["direction"]) == ("loss", "minimize")


@pytest.mark.parametrize("objective, task, message", [
    ("val_accuracy", "regression", r"objective 'val_accuracy' is a classification metric, but the config's data "
                                   r"\(set_table\) is a regression, which logs val_mae, val_rmse, mae, val_loss, loss"),
    ("accuracy", "regression", r"objective 'accuracy' is a classification metric"),
    ("val_mae", "classification", r"objective 'val_mae' is a regression metric, but the config's data "
                                  r"\(digits\) is a classification, which logs val_accuracy, accuracy, val_loss"),
    ("val_rmse", "classification", r"or leave objective: out for val_accuracy"),
])
def test_an_objective_the_task_does_not_log_is_refused(tmp_path, base, regression_base, objective, task, message):
    config = regression_base if task == "regression" else base
    with pytest.raises(space.SweepError, match=message) as info:
        space.load_sweep(_write(tmp_path, f"objective: {objective}\nspace: {{seed: [1, 2]}}"), config)
    assert str(info.value).startswith(f"{tmp_path / 's.yaml'}: objective ") and "\n" not in str(info.value)


def test_data_that_cannot_be_read_needs_an_objective_every_task_logs(tmp_path, regression_base):
    missing = yaml.safe_load(yaml.safe_dump(regression_base))
    missing["data"]["path"] = str(tmp_path / "nowhere.parquet")
    with pytest.raises(space.SweepError, match=r"s\.yaml: no objective given, and the task of the data "
                                               r"\(set_table at .*nowhere\.parquet\) cannot be told "
                                               r"\(DataNotFoundError: .*\); set objective: ") as info:
        space.load_sweep(_write(tmp_path, "space: {seed: [1, 2]}"), missing)
    assert "\n" not in str(info.value)
    with pytest.raises(space.SweepError, match=r"objective 'val_mae' is logged by a regression only, and the task "
                                               r"of the data .* cannot be told .*use objective: val_loss"):
        space.load_sweep(_write(tmp_path, "objective: val_mae\nspace: {seed: [1, 2]}"), missing)
    got = space.load_sweep(_write(tmp_path, "objective: val_loss\nspace: {seed: [1, 2]}"), missing)
    assert got["objective"] == "val_loss"
