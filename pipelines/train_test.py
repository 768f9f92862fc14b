"""`python -m pipelines.train` with an MLflow store that cannot be used: one line, exit code 2, and
nothing prepared or written. (Whole trainings are in tests/training.)"""

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


@pytest.mark.parametrize("store", ["server", "embedded"])
def test_a_store_that_cannot_be_used_stops_training_before_anything_is_written(store, tmp_path, capsys,
                                                                               monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    port = _closed_port()
    where = {"server": [f"runs_dir={tmp_path / 'runs'}", f"mlflow.tracking_uri=http://me:s3cret@127.0.0.1:{port}"],
             # /proc cannot be written even by root, so the embedded store of this runs_dir cannot be created.
             "embedded": ["runs_dir=/proc/setnet-test-runs"]}[store]
    argv = ["--set", f"data.data_dir={tmp_path / 'tfds'}", f"export.root={tmp_path / 'exports'}", *where]
    assert train.main(argv) == 2
    line = _one_error_line(capsys)
    if store == "server":
        assert line.startswith(f"error: MLflow tracking store http://me:***@127.0.0.1:{port} (from "
                               f"mlflow.tracking_uri): does not answer (connection refused); start the server")
        assert "s3cret" not in line
    else:
        assert line.startswith("error: MLflow tracking store sqlite:////proc/setnet-test-runs/mlflow.db (from the "
                               "embedded store of runs_dir): cannot create"), line
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


@pytest.mark.parametrize("runs_dir, problem", [("/proc/setnet-test-runs", "/proc is not writable"),
                                               ("A_FILE/runs", "A_FILE is a file, not a folder")])
def test_a_runs_dir_that_cannot_be_created_stops_training_before_anything_is_written(runs_dir, problem, tmp_path,
                                                                                     capsys):
    (tmp_path / "a_file").write_text("")
    runs_dir, problem = (s.replace("A_FILE", str(tmp_path / "a_file")) for s in (runs_dir, problem))
    argv = ["--set", f"runs_dir={runs_dir}", "mlflow.enabled=false", "train.epochs=1",
            f"data.data_dir={tmp_path / 'tfds'}", f"export.root={tmp_path / 'exports'}"]
    assert train.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: runs_dir={runs_dir}: run folders cannot be created "
                                               f"there: {problem}"), err
    assert err[0].endswith("choose a writable folder: --set runs_dir=DIR")
    assert [p.name for p in tmp_path.iterdir()] == ["a_file"]  # no data prepared, no export
