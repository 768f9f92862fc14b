"""Tests of the server's configuration: TF Serving's models.config, version policies and
labels, and the CLI's refusal of incomplete flags."""

import doctest
import pathlib

import pytest

from serving.server import config, errors
from serving.server.__main__ import main
from serving.server.config import load_model_config_file, parse_labels, parse_policy
from serving.server.errors import ConfigError

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_shipped_models_config_parses():
    configs = load_model_config_file(ROOT / "serving" / "models.config")
    assert [c.name for c in configs] == ["setnet"]
    assert configs[0].base_path == "/models/setnet"
    assert configs[0].policy[0] in ("latest", "all", "specific")


def test_bad_config_files_name_the_file_and_the_problem(tmp_path):
    bad = tmp_path / "models.config"
    bad.write_text("model_config_list { config { nam: 'x' base_path: '/m' } }")
    with pytest.raises(ConfigError, match=r"models.config.*no field named \"nam\""):
        load_model_config_file(bad)
    bad.write_text("model_config_list { config { name: 'x' } }")
    with pytest.raises(ConfigError, match="needs both name and base_path"):
        load_model_config_file(bad)
    with pytest.raises(ConfigError, match="cannot read"):
        load_model_config_file(tmp_path / "missing.config")
    for text in ("latest:0", "newest", "specific:"):
        with pytest.raises(ConfigError, match="bad version policy"):
            parse_policy(text)
    assert parse_policy("specific:3,1") == ("specific", (1, 3))
    with pytest.raises(ConfigError, match="LABEL=VERSION"):
        parse_labels(["stable"])


def test_cli_refuses_incomplete_arguments(capsys):
    assert main(["--model-name", "x"]) == 2
    assert "--model-base-path" in capsys.readouterr().err
    assert main(["--model-name", "x", "--model-base-path", "/tmp", "--max-points", "0"]) == 2
    assert "--max-points must be >= 1" in capsys.readouterr().err


def test_ports_mean_what_they_mean_to_tensorflow_model_server():
    parse = config.build_parser().parse_args
    defaults = parse([])
    assert (defaults.port, defaults.rest_api_port) == (8500, 8501)
    # The spelling from the issue: REST on --rest_api_port, gRPC on --port.
    args = parse(["--rest_api_port=18503", "--port=18504"])
    assert (args.rest_api_port, args.port) == (18503, 18504)
    assert parse(["--rest-api-port", "7", "--grpc_socket_path", "/tmp/s"]).rest_api_port == 7
    config.check_ports(parse(["--rest_api_port", "0"]))  # gRPC only, as TF Serving's default
    config.check_ports(parse(["--port", "0", "--grpc_socket_path", "/tmp/s"]))


@pytest.mark.parametrize("flags, fragment", [
    (["--port", "8600", "--rest_api_port", "8600"], "both 8600; give them different ports"),
    (["--port", "0"], "--port 0 leaves gRPC without a port"),
    (["--rest_api_port", "70000"], "--rest_api_port must be a port number from 0 to 65535"),
    (["--grpc_max_threads", "0"], "--grpc_max_threads must be >= 1"),
])
def test_cli_refuses_listening_flags_that_do_not_fit_in_one_line(capsys, flags, fragment):
    assert main(["--model-name", "x", "--model-base-path", "/tmp", *flags]) == 2
    err = capsys.readouterr().err
    assert fragment in err and err.count("\n") == 1 and err.startswith("error: ")


@pytest.mark.parametrize("module", [config, errors], ids=lambda m: m.__name__)
def test_module_examples_run(module):
    result = doctest.testmod(module)
    assert result.attempted > 0 and result.failed == 0
