"""The `spectrum` config section end to end: a tiny training run measures the network spectrum every
epoch on validation batches and logs it to MLflow (metrics per layer and component, table and PNG)."""

import json
import pathlib

import numpy as np
import pytest


@pytest.mark.timeout(300)
def test_training_logs_the_spectrum_to_mlflow(tmp_path, monkeypatch, capsys):
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

    # The CLI reads the same run back (config + latest checkpoint) and, on the same validation batch,
    # measures what training logged after the last epoch.
    from setnet.spectral.__main__ import main

    assert main(["spectrum", "--run", str(run_dir), "--split", cfg["data"]["val_split"], "--max-batches", "1",
                 "--out", str(tmp_path / "cli")]) == 0
    rows = json.loads((tmp_path / "cli" / "spectrum.json").read_text())
    assert sorted(r["layer"] for r in rows) == layers
    for r in rows:
        for c in ("trivial", "standard"):
            assert r["fraction"][c] == pytest.approx(metrics[f"spectrum/{r['layer']}/{c}"], abs=1e-4)
    capsys.readouterr()
    assert main(["spectrum", "--run", str(tmp_path)]) == 2
    assert "is not a training run folder" in capsys.readouterr().err
    assert main(["spectrum", "--run", str(run_dir), "--model", "x.keras"]) == 2
    assert "exactly one of --model" in capsys.readouterr().err
