"""`python -m pipelines.train` with an MLflow store or a folder it writes to that cannot be used: one
line, exit code 2, and nothing prepared or written. (Whole trainings are in tests/training.)"""

import json
import socket

import pytest

from pipelines import train
from pipelines.tracking import PENDING_FILE, STATE_FILE


def _closed_port() -> int:
    # Bound and released: nothing listens there, so a connection is refused at once.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: MLflow tracking store ") and "Traceback" not in err[0], err
    return err[0]


@pytest.mark.parametrize("store", ["server", "sqlite"])
def test_a_store_that_cannot_be_used_stops_training_before_anything_is_written(store, tmp_path, capsys,
                                                                               monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    port = _closed_port()
    where = {"server": [f"runs_dir={tmp_path / 'runs'}", f"mlflow.tracking_uri=http://me:s3cret@127.0.0.1:{port}"],
             # /proc cannot be written even by root, so this SQLite store cannot be created.
             "sqlite": [f"runs_dir={tmp_path / 'runs'}",
                        "mlflow.tracking_uri=sqlite:////proc/setnet-test-runs/mlflow.db"]}[store]
    argv = ["--set", f"data.data_dir={tmp_path / 'tfds'}", f"export.root={tmp_path / 'exports'}", *where]
    assert train.main(argv) == 2
    line = _one_error_line(capsys)
    if store == "server":
        assert line.startswith(f"error: MLflow tracking store http://me:***@127.0.0.1:{port} (from "
                               f"mlflow.tracking_uri): does not answer (connection refused); start the server")
        assert "s3cret" not in line
    else:
        assert line.startswith("error: MLflow tracking store sqlite:////proc/setnet-test-runs/mlflow.db (from "
                               "mlflow.tracking_uri): cannot create"), line
        assert "--set runs_dir=DIR" in line
    assert line.endswith("or train without tracking: --set mlflow.enabled=false")
    assert list(tmp_path.iterdir()) == []  # no data prepared, no run folder, no export


def test_sync_of_a_broken_run_folder_is_one_line(tmp_path, capsys):
    (tmp_path / PENDING_FILE).write_text("{not json")
    assert train.main(["--sync", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {tmp_path / PENDING_FILE} is not valid JSON"), err
    (tmp_path / PENDING_FILE).unlink()
    (tmp_path / STATE_FILE).write_text(json.dumps({"tracking_uri": "htp://127.0.0.1:5000", "run_id": "r",
                                                   "experiment": "exp"}))
    assert train.main(["--sync", str(tmp_path)]) == 2
    assert "MLflow has no store for the scheme 'htp'" in _one_error_line(capsys)


_FOLDERS = {"runs_dir": "run folders", "data.data_dir": "prepared datasets", "export.root": "exports",
            "train.checkpoint_dir": "job checkpoints"}


@pytest.mark.parametrize("key", list(_FOLDERS))
@pytest.mark.parametrize("value, problem", [("/proc/setnet-test-folder", "/proc is not writable"),
                                            ("A_FILE/folder", "A_FILE is a file, not a folder")])
def test_a_folder_that_cannot_be_created_stops_training_before_anything_is_written(key, value, problem, tmp_path,
                                                                                   capsys, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)  # the embedded store: a database in runs_dir
    (tmp_path / "a_file").write_text("")
    value, problem = (s.replace("A_FILE", str(tmp_path / "a_file")) for s in (value, problem))
    folders = {"runs_dir": tmp_path / "runs", "data.data_dir": tmp_path / "tfds",
               "export.root": tmp_path / "exports", "train.checkpoint_dir": tmp_path / "checkpoints", key: value}
    argv = ["--set", "train.epochs=1", "train.steps_per_epoch=2", *(f"{k}={v}" for k, v in folders.items())]
    assert train.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {key}={value}: {_FOLDERS[key]} cannot be created "
                                               f"there: {problem}"), err
    assert f"choose a writable folder: --set {key}=DIR" in err[0]
    # No data prepared, no MLflow database, no run folder, checkpoint or export.
    assert [p.name for p in tmp_path.iterdir()] == ["a_file"]
