"""docs/own-data.md end to end: data written by pandas and numpy -> prepare -> train -> export ->
the embedded server -> one REST request with sets of different sizes, for a 3-class folder of
.npy arrays and .ply point clouds and a 2-target regression on a Parquet table, 5 features per
point; the invariance checks and the serving invariance suite run on both exports.

Tiny data and two epochs: the models learn little; what is checked is that every stage takes the
data's F and task and that the served answers are those of the exported model.
"""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from examples import own_data
from pipelines import prepare
from pipelines import train as train_cli
from serving.client import ServingClient
from serving.server.process import ServerProcess
from setnet import invariance as inv

pytestmark = pytest.mark.slow

ROOT = pathlib.Path(__file__).resolve().parents[2]
CONFIGS = {"own_classification": ROOT / "configs" / "own_classification.yaml",
           "own_regression": ROOT / "configs" / "own_regression.yaml"}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """{model name: export version folder}, each trained from its shipped config on tiny data."""
    work = tmp_path_factory.mktemp("own_data")
    data = own_data.write_all(work / "own", sets=30, seed=0, min_points=24, max_points=64)
    tfds_dir = work / "tfds"
    # The summary of each prepare, as `make prepare DATASET=... ARGS=...` prints it.
    assert prepare.main(["set_folder", "--path", str(data / "shape_folder"), "--data-dir", str(tfds_dir)]) == 0
    assert prepare.main(["set_table", "--path", str(data / "shapes.parquet"), "--set-column", "set_id",
                         "--target-column", "elongation", "mean_intensity", "--feature-columns", "x", "y", "z",
                         "intensity", "curvature", "--data-dir", str(tfds_dir)]) == 0
    paths = {}
    for name, config in CONFIGS.items():
        path = data / ("shape_folder" if name == "own_classification" else "shapes.parquet")
        argv = ["--config", str(config), "--set", f"data.path={path}", f"data.data_dir={tfds_dir}",
                "data.num_points=64", "data.buckets=[64]", "data.batch_size=8", "train.epochs=2",
                "train.xla=false", f"runs_dir={work / 'runs'}", f"export.root={work / 'exports'}",
                f"export.model_name={name}", f"mlflow.tracking_uri=sqlite:///{work / 'mlflow.db'}",
                "mlflow.registered_model=null"]
        assert train_cli.main(argv) == 0, name
        versions = sorted((work / "exports" / name).iterdir())
        assert [v.name for v in versions] == ["1"]
        paths[name] = versions[0]
    # Training reused what prepare wrote: one prepared copy per dataset.
    for dataset in ("set_folder", "set_table"):
        assert len([p for p in (tfds_dir / dataset).iterdir() if p.is_dir()]) == 1, dataset
    return work, paths


@pytest.fixture(scope="module")
def server(exported):
    work, paths = exported
    config = work / "models.config"
    config.write_text("model_config_list {\n" + "".join(
        f'  config {{ name: "{name}" base_path: "{path.parent}" model_platform: "tensorflow" }}\n'
        for name, path in paths.items()) + "}\n")
    process = ServerProcess(["--model-config-file", str(config), "--host", "127.0.0.1"], work)
    try:
        url = process.wait_ready()
        yield url
    finally:
        process.stop()


def test_training_records_the_task_and_the_plots(exported):
    work, paths = exported
    summary = json.loads((paths["own_regression"] / "assets.extra" / "export.json").read_text())
    assert summary["task"] == "regression" and summary["num_features"] == 5
    assert summary["target_names"] == ["elongation", "mean_intensity"]
    assert summary["invariance"]["passed"] and summary["masked_padding"]["passed"]
    assert (paths["own_regression"] / "assets" / "target_names.txt").read_text().split() == list(own_data.TARGETS)
    assert (paths["own_classification"] / "assets" / "class_names.txt").read_text().split() == sorted(own_data.SHAPES)
    runs = {p.parent.parent.name: p for p in (work / "runs").glob("*/*/history.json")}
    regression = json.loads(runs["setnet-own-regression"].read_text())
    assert set(regression["test"]) == {"loss", "mae", "rmse"}
    assert set(regression["epochs"][0]) >= {"loss", "mae", "val_loss", "val_mae", "val_rmse"}
    assert (runs["setnet-own-regression"].parent / "predicted_vs_true.png").stat().st_size > 0
    classification = json.loads(runs["setnet-own-classification"].read_text())
    assert set(classification["test"]) == {"loss", "accuracy"}
    # The plot reached MLflow with the run.
    artifacts = list((work / "runs").rglob("plots/predicted_vs_true.png"))
    assert artifacts, "predicted_vs_true.png is not among the MLflow artifacts"


@pytest.mark.parametrize("name, output, width", [("own_classification", "probabilities", 3),
                                                 ("own_regression", "prediction", 2)])
def test_one_request_with_sets_of_different_sizes_answers_as_one_request_per_set(server, name, output, width):
    client = ServingClient(server, name, timeout=120)
    rng = np.random.default_rng(1)
    sets = [own_data.make_set(shape, n, rng)[0] for shape, n in
            (("sphere", 24), ("cube", 61), ("cylinder", 7), ("cube", 40))]
    mixed = client.predict_json({"instances": [s.tolist() for s in sets]})["predictions"]
    assert len(mixed) == len(sets)
    for cloud, answer in zip(sets, mixed):
        alone = client.predict_json({"instances": [cloud.tolist()]})["predictions"][0]
        if output == "prediction":
            # One output: TF Serving's row format gives each instance's value itself.
            answer, alone = {output: answer}, {output: alone}
        assert set(answer) == set(alone) and len(answer[output]) == width
        np.testing.assert_allclose(answer[output], alone[output], rtol=1e-4, atol=1e-5)
    if output == "probabilities":
        assert [a["class_id"] for a in mixed] == [int(np.argmax(a["probabilities"])) for a in mixed]


@pytest.mark.parametrize("name", ["own_classification", "own_regression"])
def test_invariance_checks_pass_on_the_served_export(server, name, tmp_path):
    client = ServingClient(server, name, timeout=120)
    key = "probabilities" if name == "own_classification" else "prediction"
    clouds = [inv.with_features(c, 5, seed=i) for i, c in enumerate(inv.shape_clouds(3, sizes=(9, 40, 64)))]

    def predict(points):
        return client.predict(points)[key]

    assert inv.check_invariance(predict, clouds, permutations=3, seed=3)["passed"]
    padded = inv.check_masked_padding(predict, lambda p, m: client.predict_padded(p, m)[key], clouds, seed=3)
    assert padded["passed"], padded
    # The serving suite itself, pointed at this server: it reads F and the output from the signature.
    report = tmp_path / "suite.json"
    run = subprocess.run([sys.executable, "-m", "pytest", str(ROOT / "tests" / "serving"), "-q", "-p",
                          "no:cacheprovider", f"--serving-url={server}", f"--model-name={name}",
                          f"--serving-report={report}"], capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    summary = json.loads(report.read_text())
    assert summary["passed"] and summary["model_name"] == name
