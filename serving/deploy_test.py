"""Checks of what `make serve-docker` runs: docker-compose.yml and serving/models.config.

Docker is not available where the tests run, so these read the files the way docker
compose and tensorflow_model_server would, and check that they fit together: the image,
the ports, the mounts, the flags, and a model config that TF Serving's own protos parse.
"""

import pathlib
import re

import pytest
import yaml
from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _interpolate(text: str, env: dict) -> str:
    """docker compose's ${VAR:-default} substitution (the only form the file uses)."""
    def sub(m):
        return env.get(m.group(1)) or m.group(2)
    out = re.sub(r"\$\{(\w+):-([^}]*)\}", sub, text)
    assert "$" not in out.replace("$$", ""), f"uninterpolated variable left: {out}"
    return out


def _compose(env=None) -> dict:
    return yaml.safe_load(_interpolate((ROOT / "docker-compose.yml").read_text(), env or {}))


def _models_config() -> model_server_config_pb2.ModelServerConfig:
    proto = model_server_config_pb2.ModelServerConfig()
    text_format.Parse((ROOT / "serving" / "models.config").read_text(), proto)
    return proto


def _flags(service) -> dict:
    flags = {}
    for arg in service["command"]:
        name, sep, value = arg.partition("=")
        assert name.startswith("--") and sep, f"not a --flag=value argument: {arg!r}"
        flags[name[2:]] = value
    return flags


def test_models_config_parses_with_tf_serving_protos():
    proto = _models_config()
    assert proto.WhichOneof("config") == "model_config_list"
    (config,) = proto.model_config_list.config
    assert config.name == "setnet"
    assert config.base_path == "/models/setnet"
    assert config.model_platform == "tensorflow"
    assert config.model_version_policy.WhichOneof("policy_choice") == "latest"
    assert config.model_version_policy.latest.num_versions == 2
    assert dict(config.version_labels) == {"stable": 1, "canary": 2}


def test_compose_runs_tf_serving_on_the_rest_and_grpc_ports():
    compose = _compose()
    (name, service), = compose["services"].items()
    assert service["image"].startswith("tensorflow/serving:")
    assert _compose({"TF_SERVING_TAG": "2.19.1"})["services"][name]["image"] == \
        "tensorflow/serving:2.19.1"
    ports = {int(p.split(":")[1]): int(p.split(":")[0]) for p in service["ports"]}
    assert ports == {8501: 8501, 8500: 8500}  # container -> host: REST, gRPC


def test_compose_mounts_what_models_config_names():
    service = next(iter(_compose()["services"].values()))
    mounts = {}
    for volume in service["volumes"]:
        host, container, *mode = volume.split(":")
        assert mode == ["ro"], f"{volume}: TF Serving only reads; mount read-only"
        mounts[container] = host
    flags = _flags(service)
    config_path = flags["model_config_file"]
    assert mounts[config_path] == "./serving/models.config"
    (ROOT / mounts[config_path]).resolve(strict=True)
    # Every model's base_path lies in a mounted folder: the default export of `make train`.
    for config in _models_config().model_config_list.config:
        assert mounts.get(config.base_path) == "./exports/setnet-default", config.base_path
    other = _compose({"SETNET_EXPORT": "modelnet40-run"})["services"]
    assert "./exports/modelnet40-run:/models/setnet:ro" in next(iter(other.values()))["volumes"]
    elsewhere = _compose({"SETNET_EXPORTS": "/data/exports", "SETNET_EXPORT": "m"})["services"]
    assert "/data/exports/m:/models/setnet:ro" in next(iter(elsewhere.values()))["volumes"]
    # Labels name versions that may not be exported yet: TF Serving needs this flag to start.
    assert flags["allow_version_labels_for_unavailable_models"] == "true"
    assert float(flags["model_config_file_poll_wait_seconds"]) > 0


def test_embedded_server_reads_the_same_config_for_make_serve(tmp_path):
    from serving.server.config import build_parser, configs_from_args

    args = build_parser().parse_args([
        "--model-config-file", str(ROOT / "serving" / "models.config"),
        "--model-base-path", str(tmp_path)])
    (config,) = configs_from_args(args)
    assert (config.name, config.base_path) == ("setnet", str(tmp_path))
    assert config.policy == ("latest", 2)
    assert config.labels == {"stable": 1, "canary": 2}


@pytest.mark.parametrize("target", ["serve", "serve-docker", "bench-serve"])
def test_make_targets_exist(target):
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(rf"^{re.escape(target)}:", makefile, re.MULTILINE), target
