"""Any F and regression below the end-to-end test: the config keys, the input pipeline's
augmentation on the coordinates only, the regression loss and metric, the model's input features."""

from __future__ import annotations

import numpy as np
import pytest

from examples import own_data
from pipelines.config import ConfigError, load_config
from pipelines.tasks import make_task

TABLE = "name: set_table, path: t.parquet, set_column: sid"


def data(extra: str = "", base: str = TABLE) -> list[str]:
    """One override setting the data section's keys together, as a config file does."""
    return [f"data={{{base}{', ' + extra if extra else ''}}}"]


@pytest.mark.parametrize("overrides, message", [
    (["data.path=x"], "data.path: only set_folder and set_table read it, but name is 'synthetic_shapes'"),
    (["data.name=set_folder"], "data.path: set_folder needs the data's location"),
    (data(), "data.target_column: set_table needs the set-id column and the target column"),
    (data("target_column: y, xyz_columns: [a, b]"), "data.xyz_columns: name the 3 coordinate"),
    (data("target_column: y", base="name: set_folder, path: d"), "data.target_column: set_table reads it"),
    (data("target_column: [y, y]"), "data.target_column: names must differ"),
    (data("target_column: [1]"), "data.target_column: must be a name or a list of names, got item 1"),
])
def test_user_data_keys_are_checked_with_one_line_naming_the_key(overrides, message):
    with pytest.raises(ConfigError) as err:
        load_config(None, overrides)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_a_target_column_name_is_a_list_of_one_and_reaches_the_builder():
    cfg = load_config(None, data("target_column: y, feature_columns: [a, b, c]"))
    assert cfg.data.target_column == ("y",)
    assert cfg.data.builder_params() == {
        "path": "t.parquet", "xyz_columns": None, "max_points": 100000, "on_too_many": "subsample",
        "set_column": "sid", "target_column": "y", "feature_columns": ["a", "b", "c"], "task": "auto"}
    assert load_config(None).data.builder_params() is None


def test_losses_fit_their_task():
    with pytest.raises(ValueError, match="mse is a regression loss, but the dataset is a classification"):
        make_task("classification", loss="mse")
    with pytest.raises(ValueError, match="cross_entropy needs class labels"):
        make_task("regression", loss="cross_entropy")
    task = make_task("regression")
    labels, outputs = np.array([[1.0, 2.0], [0.0, 0.0]]), np.array([[2.0, 2.0], [0.0, -3.0]])
    np.testing.assert_allclose(task.per_example_loss(labels, outputs).numpy(), [0.5, 4.5])
    np.testing.assert_allclose(task.score(labels, outputs).numpy(), [0.5, 1.5])      # MAE terms
    np.testing.assert_allclose(task.squared_error(labels, outputs).numpy(), [0.5, 4.5])


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    work = tmp_path_factory.mktemp("any_f")
    data = own_data.write_all(work / "own", sets=12, seed=3, min_points=8, max_points=20)
    params = {"path": str(data / "shapes.parquet"), "set_column": "set_id",
              "target_column": ["elongation", "mean_intensity"],
              "feature_columns": list(own_data.FEATURES)}
    return params, str(work / "tfds")


def test_augmentation_moves_the_coordinates_and_leaves_the_other_features(table):
    from pipelines.input import dataset_info, make_dataset

    params, data_dir = table
    info = dataset_info("set_table", data_dir=data_dir, params=params)
    assert (info["task"], info["num_features"], info["spatial_axes"], info["num_targets"]) == (
        "regression", 5, (0, 1, 2), 2)
    kw = dict(num_points=24, batch_size=4, training=True, seed=5, data_dir=data_dir, params=params)
    (plain, y), = make_dataset("set_table", "train", augment=None, **kw).take(1)
    (moved, y2), = make_dataset("set_table", "train", augment={"rotate": True, "scale": [0.5, 2.0],
                                                               "jitter": 0.05}, **kw).take(1)
    assert plain["points"].shape == (4, 24, 5) and y.shape == (4, 2) and y.dtype.name == "float32"
    np.testing.assert_array_equal(y.numpy(), y2.numpy())
    np.testing.assert_array_equal(plain["mask"].numpy(), moved["mask"].numpy())
    real = plain["mask"].numpy()
    a, b = plain["points"].numpy()[real], moved["points"].numpy()[real]
    np.testing.assert_array_equal(a[:, 3:], b[:, 3:])
    assert np.abs(a[:, :3] - b[:, :3]).min(axis=0).max() > 0


def test_the_model_normalises_the_coordinates_and_passes_the_other_features():
    from setnet.models import build_regressor

    model = build_regressor({"blocks": [{"kind": "linear", "units": 8}], "head": [8], "head_dropout": 0.0},
                            num_targets=2, num_features=5)
    assert model.input["points"].shape[-1] == 5
    rng = np.random.default_rng(0)
    points = rng.normal(size=(2, 10, 5)).astype(np.float32)
    mask = np.ones((2, 10), bool)
    base = model({"points": points, "mask": mask}).numpy()
    shifted = points.copy()
    shifted[..., :3] = shifted[..., :3] * 3.0 + 7.0  # position and size of the coordinates
    np.testing.assert_allclose(model({"points": shifted, "mask": mask}).numpy(), base, rtol=1e-4, atol=1e-4)
    other = points.copy()
    other[..., 3] += 1.0
    assert not np.allclose(model({"points": other, "mask": mask}).numpy(), base, atol=1e-4)
