"""The comparison table shows each task's figures: accuracy for classifiers, MAE and RMSE for regressors."""

from pipelines.compare import format_table


def _row(run, task, **figures):
    return {"run": run, "model": "setnet-l", "data": "set_table", "num_points": 64, "batch_size": 8,
            "learning_rate": 0.003, "epochs": 2, "parameters": 1000, "train_minutes": 0.1, "wall_minutes": 0.2,
            "examples_per_second": 100.0, "status": "FINISHED", "task": task,
            **{k: figures.get(k) for k in ("best_val_accuracy", "test_accuracy", "best_val_mae", "test_mae",
                                           "test_rmse")}}


def test_a_regression_table_shows_mae_and_rmse_and_no_accuracy():
    header = format_table([_row("r1", "regression", best_val_mae=0.25, test_mae=0.3, test_rmse=0.41)]).splitlines()[0]
    assert "test mae" in header and "test rmse" in header and "best val mae" in header
    assert "acc" not in header


def test_a_classification_table_is_unchanged_and_a_mixed_one_shows_both():
    only = format_table([_row("c1", "classification", best_val_accuracy=0.5, test_accuracy=0.6)])
    assert "test acc" in only and "mae" not in only and "0.6000" in only
    mixed = format_table([_row("c1", "classification", test_accuracy=0.6),
                          _row("r1", "regression", test_mae=0.3, test_rmse=0.41)]).splitlines()
    assert "test acc" in mixed[0] and "test mae" in mixed[0]
    assert "0.41" in mixed[3] and mixed[3].split().count("-") >= 2  # the regressor has no accuracy


def test_the_cli_reports_a_sweep_with_parent_and_bad_input_is_one_line(tmp_path, capsys, monkeypatch):
    from mlflow import MlflowClient

    from pipelines.compare import main

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert main(["--parent", "some-study", "--runs-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"error: no MLflow store at {tmp_path / 'mlflow.db'}")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    MlflowClient(tracking_uri=uri).create_experiment("e")  # a store with no sweep in it
    capsys.readouterr()  # MLflow's log of creating its tables
    assert main(["--parent", "some-study", "--tracking-uri", uri]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: no sweep 'some-study' in this tracking store (sweeps: none)")


def test_the_cli_never_shows_the_stores_password(capsys):
    from pipelines.compare import main

    assert main(["--ui", "--tracking-uri", "http://me:s3cret@tracking:5000/?token=t0ken"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: the tracking store is the server at http://me:***@tracking:5000/?token=***: ")
    assert "s3cret" not in err and "t0ken" not in err
