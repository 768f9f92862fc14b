"""Promotion and rollback against a registry in a temporary embedded store: folders, labels,
history, and refusals that change nothing. (Against a real `mlflow server` and the embedded
serving server, with trained models: tests/training/test_sweep.py.)"""

import hashlib
import json
import os
import pathlib

import pytest

from serving import promote as pr
from serving.server.config import load_model_config_file
from serving.server.process import free_port

SHIPPED_CONFIG = pathlib.Path(__file__).resolve().parent / "models.config"


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """Registered model 'm': versions 1-3 pass the invariance check, 4 failed it."""
    from mlflow import MlflowClient

    root = tmp_path_factory.mktemp("registry")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = MlflowClient(uri)
    exp = client.create_experiment("e", artifact_location=(root / "artifacts").as_uri())
    client.create_registered_model("m")
    for i in range(1, 5):
        run = client.create_run(exp)
        folder = root / f"export{i}"
        (folder / "variables").mkdir(parents=True)
        (folder / "saved_model.pb").write_bytes(f"model {i}".encode())
        client.log_artifacts(run.info.run_id, str(folder), "export/1")
        client.create_model_version("m", f"runs:/{run.info.run_id}/export/1", run_id=run.info.run_id,
                                    tags={"invariance.passed": str(i != 4), "invariance.max_abs_deviation": "0.3"})
    return {"uri": uri, "client": client, "root": root}


def _tree(*paths: pathlib.Path) -> dict:
    """Every file under the paths with its content hash (the 'nothing changed' check)."""
    out = {}
    for path in paths:
        files = [path] if path.is_file() else sorted(p for p in path.rglob("*")) if path.exists() else []
        for f in files:
            out[str(f)] = hashlib.sha1(f.read_bytes()).hexdigest() if f.is_file() else "dir"
    return out


def _served(config: pathlib.Path):
    (c,) = load_model_config_file(config)
    return c.policy, c.labels


def test_promote_challenge_rollback(store, tmp_path):
    base, config = tmp_path / "serve" / "m", tmp_path / "models.config"
    config.write_text(SHIPPED_CONFIG.read_text().replace('name: "setnet"', 'name: "m"'))
    kw = dict(base_path=base, model_config_file=config, tracking_uri=store["uri"], printer=lambda s: None)

    got = pr.promote("m", 2, "champion", **kw)
    assert got["folder"] == 1 and (base / "1" / "saved_model.pb").read_bytes() == b"model 2"
    assert json.loads((base / "1" / "assets.extra" / "registry.json").read_text())["version"] == 2
    # The container base path and the comments of the shipped file stay; labels and policy follow the aliases.
    assert 'base_path: "/models/setnet"' in config.read_text()
    assert config.read_text().startswith("# TensorFlow Serving model config")
    assert _served(config) == (("specific", (1,)), {"stable": 1, "canary": 1})

    pr.promote("m", 3, "challenger", **kw)
    assert (base / "2" / "saved_model.pb").read_bytes() == b"model 3"
    assert _served(config) == (("specific", (1, 2)), {"stable": 1, "canary": 2})

    got = pr.promote("m", 3, "champion", **kw)  # the challenger wins: its folder is reused, not copied again
    assert got["folder"] == 2 and sorted(p.name for p in base.iterdir()) == ["1", "2"]
    assert _served(config) == (("specific", (2,)), {"stable": 2, "canary": 2})

    got = pr.promote("m", None, "champion", rollback=True, **kw)
    assert got["version"] == 2 and got["folder"] == 1
    assert _served(config) == (("specific", (1, 2)), {"stable": 1, "canary": 2})
    rm = store["client"].get_registered_model("m")
    assert rm.aliases == {"champion": 2, "challenger": 3}
    assert json.loads(rm.tags[pr.HISTORY_TAG]) == [2]
    assert sorted(p.name for p in base.iterdir()) == ["1", "2"]  # no temporary folder left behind

    before = _tree(base, config)
    with pytest.raises(pr.PromoteError, match="no earlier champion"):
        pr.promote("m", None, "champion", rollback=True, **kw)
    assert _tree(base, config) == before


def test_a_missing_models_config_is_created_with_the_base_path(store, tmp_path):
    client = store["client"]
    v1 = client.get_model_version("m", "1")
    client.create_registered_model("n")
    client.create_model_version("n", v1.source, run_id=v1.run_id, tags={"invariance.passed": "True"})
    base, config = tmp_path / "b", tmp_path / "new" / "models.config"
    pr.promote("n", 1, "challenger", base_path=base, model_config_file=config, tracking_uri=store["uri"],
               printer=lambda s: None)
    (c,) = load_model_config_file(config)
    # Only a challenger so far: both labels name it, so that neither answers "unknown label".
    assert (c.name, pathlib.Path(c.base_path), c.labels) == ("n", base.resolve(), {"stable": 1, "canary": 1})


@pytest.mark.parametrize("args, message", [
    (["--version", "9"], "registered model 'm' has no version 9 (versions: 1, 2, 3, 4)"),
    (["--version", "4"], "version 4 of 'm' cannot be served: its invariance check failed (max deviation 0.3)"),
    (["--model", "nope", "--version", "1"], "has no registered model 'nope' (registered: m"),
    (["--version", "1", "--tracking-uri", "UNREACHABLE"], "cannot reach the registry at http://me:***@127.0.0.1:"),
    (["--version", "1", "--model-config-file", "GARBAGE"], "not a readable TF Serving model config"),
])
def test_refusals_are_one_line_exit_2_and_change_nothing(store, tmp_path, capsys, args, message):
    base, config = tmp_path / "serve" / "m", tmp_path / "models.config"
    config.write_text(SHIPPED_CONFIG.read_text().replace('name: "setnet"', 'name: "m"'))
    assert pr.main(["--model", "m", "--version", "1", "--base-path", str(base), "--model-config-file", str(config),
                    "--tracking-uri", store["uri"]]) == 0
    capsys.readouterr()
    garbage = tmp_path / "garbage.config"
    garbage.write_text("model_config_list { config { nme: 'x' } }")
    args = [a.replace("UNREACHABLE", f"http://me:s3cret@127.0.0.1:{free_port()}").replace("GARBAGE", str(garbage))
            for a in args]
    before = _tree(base, config, garbage)
    aliases = store["client"].get_registered_model("m").aliases
    argv = ["--model", "m", "--base-path", str(base), "--model-config-file", str(config),
            "--tracking-uri", store["uri"], *args]
    assert pr.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and message in err, err
    assert "s3cret" not in err
    assert _tree(base, config, garbage) == before
    assert store["client"].get_registered_model("m").aliases == aliases


def test_no_store_at_all_is_refused(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert pr.main(["--version", "1", "--runs-dir", str(tmp_path), "--base-path", str(tmp_path / "b"),
                    "--model-config-file", str(tmp_path / "models.config")]) == 2
    assert "no MLflow store at" in capsys.readouterr().err
    assert sorted(tmp_path.iterdir()) == []


def test_a_file_registry_leaves_no_mlflow_db_in_the_working_folder(tmp_path, monkeypatch):
    # MLflow's file registry reads each version through a client on the global tracking URI, whose
    # default is sqlite:///mlflow.db in the working folder; a promotion points it at its registry.
    from mlflow import MlflowClient

    uri = (tmp_path / "store").as_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)  # so that the setup's own registry calls make none
    client = MlflowClient(uri, registry_uri=uri)
    run = client.create_run(client.create_experiment("e"))
    export = tmp_path / "export"
    (export / "variables").mkdir(parents=True)
    (export / "saved_model.pb").write_bytes(b"model")
    client.log_artifacts(run.info.run_id, str(export), "export/1")
    client.create_registered_model("m")
    client.create_model_version("m", f"runs:/{run.info.run_id}/export/1", run_id=run.info.run_id,
                                tags={"invariance.passed": "True"})
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    assert pr.main(["--model", "m", "--version", "1", "--tracking-uri", uri, "--base-path", str(tmp_path / "b"),
                    "--model-config-file", str(tmp_path / "models.config")]) == 0
    assert list(work.iterdir()) == [] and "MLFLOW_TRACKING_URI" not in os.environ
    assert (tmp_path / "b" / "1" / "saved_model.pb").read_bytes() == b"model"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    assert {a: int(v) for a, v in client.get_registered_model("m").aliases.items()} == {"champion": 1}
