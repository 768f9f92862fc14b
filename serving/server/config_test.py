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


@pytest.mark.parametrize("module", [config, errors], ids=lambda m: m.__name__)
def test_module_examples_run(module):
    result = doctest.testmod(module)
    assert result.attempted > 0 and result.failed == 0
