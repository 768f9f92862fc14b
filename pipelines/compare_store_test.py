"""`store_uri` finds the store training logs to and never creates an empty one by looking."""

import pytest

from pipelines.compare_store import CompareError, store_uri


def test_a_missing_embedded_store_names_its_path_and_is_not_created(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    with pytest.raises(CompareError, match=f"no MLflow store at {tmp_path / 'mlflow.db'}: train first"):
        store_uri(None, tmp_path)
    assert not (tmp_path / "mlflow.db").exists()
    (tmp_path / "mlflow.db").touch()
    assert store_uri(None, tmp_path) == f"sqlite:///{tmp_path.resolve() / 'mlflow.db'}"


def test_a_named_or_environment_store_wins_over_the_runs_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert store_uri(None, tmp_path) == "http://127.0.0.1:5000"
    assert store_uri("http://tracking:80", tmp_path) == "http://tracking:80"
