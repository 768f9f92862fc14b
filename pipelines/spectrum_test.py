"""`python -m pipelines.spectrum` and the `spectrum` config section: a tiny training run measures the
network spectrum every epoch and logs it to MLflow; the command reads the run (or a saved .keras file)
back; `log_spectrum_to_mlflow` logs a spectrum outside training."""

import json
import os
import pathlib

import keras
import numpy as np
import pytest

from pipelines.spectrum import log_spectrum_to_mlflow, main
from setnet.layers import TiedEquivariantDense
from setnet.spectral import network_spectrum, spectrum_metrics
from setnet.symmetry import colors, cyclic


class RecordingClient:
    """Stands in for MlflowClient (a fresh MLflow SQLite store costs ~15 s of migrations per test run)."""

    def __init__(self):
        self.metrics, self.artifacts = [], {}

    def log_batch(self, run_id, metrics=()):
        self.metrics += [(run_id, m.key, m.value, m.step) for m in metrics]

    def log_artifacts(self, run_id, local_dir, artifact_path=None):
        self.artifacts[artifact_path] = {name: open(os.path.join(local_dir, name), "rb").read()
                                         for name in os.listdir(local_dir)}


def test_log_spectrum_to_mlflow():
    from mlflow.utils.validation import _validate_metric_name

    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 2))
    h = TiedEquivariantDense(4, colors=colors(cyclic(8)), name="conv")(inputs)
    model = keras.Model(inputs, keras.layers.Activation("relu", name="relu")(h))
    rows = network_spectrum(model, np.random.default_rng(3).normal(size=(16, 8, 2)).astype("float32"), "C8")
    metrics = spectrum_metrics(rows)
    for name in metrics:
        _validate_metric_name(name)  # MLflow's own check of metric names

    with pytest.raises(ValueError, match="no MLflow run"):
        log_spectrum_to_mlflow(rows, client=RecordingClient())
    client = RecordingClient()
    log_spectrum_to_mlflow(rows, step=3, run_id="r1", client=client)
    assert {(k, v, step) for _, k, v, step in client.metrics} == {(k, v, 3) for k, v in metrics.items()}
    files = client.artifacts["spectrum/step_3"]
    assert set(files) == {"spectrum.md", "spectrum.json", "spectrum.png"}
    assert files["spectrum.md"].decode().startswith("| layer | k=0")


def test_the_command_on_a_saved_classifier(tmp_path, capsys):
    from setnet.models import build_classifier

    keras.utils.set_random_seed(4)
    model = build_classifier({"num_classes": 4, "blocks": [{"kind": "linear", "units": 8}], "head": [8]})
    model.save(tmp_path / "tiny.keras")
    argv = ["--model", str(tmp_path / "tiny.keras"), "--dataset", "synthetic_shapes/small",
            "--num-points", "32", "--batch-size", "8", "--max-batches", "1", "--data-dir", str(tmp_path / "tfds"),
            "--out", str(tmp_path / "spec")]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "\n| layer | trivial | standard |" in "\n" + out and "| points |" in out
    assert (tmp_path / "spec" / "spectrum.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("argv, message", [
    (["--model", "missing.keras"], "no model file at missing.keras"),
    (["--run", "."], "is not a training run folder"),
    (["--run", ".", "--model", "x.keras"], "exactly one of --model"),
    ([], "exactly one of --model"),
])
def test_bad_input_is_one_line_and_exit_2(capsys, argv, message):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_nonpositive_sizes_are_refused(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["--run", ".", "--max-batches", "0"])
    assert stop.value.code == 2
    assert "--max-batches must be at least 1, got 0" in capsys.readouterr().err


def test_a_run_without_checkpoints_is_refused(tmp_path, capsys):
    from pipelines.config import load_config

    (tmp_path / "config.yaml").write_text(json.dumps(load_config(None).to_dict()))
    assert main(["--run", str(tmp_path)]) == 2
    assert "has no checkpoint yet" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_training_logs_the_spectrum_and_the_command_reads_the_run_back(tmp_path, monkeypatch, capsys):
    from mlflow import MlflowClient

    from pipelines.config import load_config
    from pipelines.train import train

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("TF_CONFIG", raising=False)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cfg = load_config(None, [
        f"runs_dir={tmp_path / 'runs'}", "experiment=spectrum-test", "data.name=synthetic_shapes/small",
        "data.num_points=32", "data.batch_size=16", "train.epochs=2", "train.steps_per_epoch=3",
        "train.xla=false", "export.enabled=false", f"mlflow.tracking_uri={uri}",
        "model.blocks=[{kind: linear, units: 8}, {kind: linear, units: 8}]", "model.head=[8]",
        "spectrum.enabled=true", "spectrum.every=1", "spectrum.max_batches=1",
    ])
    printed = []
    result = train(cfg, printer=printed.append)

    # The table went to the console and the run folder, once per epoch.
    assert sum("network spectrum after epoch" in line for line in printed) == 2
    run_dir = pathlib.Path(result["run_dir"])
    for epoch in (1, 2):
        folder = run_dir / "spectrum" / f"epoch_{epoch}"
        assert (folder / "spectrum.md").read_text().startswith("| layer | trivial | standard |")
        assert (folder / "spectrum.png").read_bytes()[:4] == b"\x89PNG"

    client = MlflowClient(tracking_uri=uri)
    run_id = result["mlflow_run_id"]
    metrics = client.get_run(run_id).data.metrics
    keys = sorted(k for k in metrics if k.startswith("spectrum/"))
    layers = sorted({k.split("/")[1] for k in keys})
    assert "points" in layers and len(layers) >= 3
    assert keys == sorted(f"spectrum/{layer}/{c}" for layer in layers for c in ("trivial", "standard"))
    for layer in layers:
        # energy fractions of one layer add up to 1 at every logged epoch
        history = {c: {m.step: m.value for m in client.get_metric_history(run_id, f"spectrum/{layer}/{c}")}
                   for c in ("trivial", "standard")}
        assert sorted(history["trivial"]) == [1, 2]
        for step in (1, 2):
            assert history["trivial"][step] + history["standard"][step] == pytest.approx(1.0, abs=1e-6)
            assert np.isfinite(history["trivial"][step])
    # the measured spectrum is not a constant: the input points are mostly non-trivial (centred shapes)
    assert metrics["spectrum/points/standard"] > 0.5

    artifacts = {a.path for a in client.list_artifacts(run_id, "spectrum")}
    assert artifacts == {"spectrum/epoch_1", "spectrum/epoch_2"}
    files = {a.path.rsplit("/", 1)[1] for a in client.list_artifacts(run_id, "spectrum/epoch_2")}
    assert files == {"spectrum.md", "spectrum.json", "spectrum.png"}

    # The command reads the same run back (config + latest checkpoint) and, on the same validation
    # batch, measures what training logged after the last epoch.
    assert main(["--run", str(run_dir), "--split", cfg.data.val_split, "--max-batches", "1",
                 "--out", str(tmp_path / "cli")]) == 0
    rows = json.loads((tmp_path / "cli" / "spectrum.json").read_text())
    assert sorted(r["layer"] for r in rows) == layers
    for r in rows:
        for c in ("trivial", "standard"):
            assert r["fraction"][c] == pytest.approx(metrics[f"spectrum/{r['layer']}/{c}"], abs=1e-4)


def test_docstring_examples():
    import doctest

    import pipelines.spectrum

    result = doctest.testmod(pipelines.spectrum)
    assert result.attempted >= 2 and result.failed == 0
