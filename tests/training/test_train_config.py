"""Config loading and validation (pure Python: no TensorFlow here)."""

import pathlib

import pytest
import yaml

from pipelines.config import CONFIG_DIR, ConfigError, defaults, dump, flatten, load_config


def _write(tmp_path, text, name="c.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_every_shipped_config_loads():
    names = sorted(p.name for p in CONFIG_DIR.glob("*.yaml"))
    for required in ("default.yaml", "modelnet.yaml", "modelnet10.yaml", "digits.yaml",
                     "modelnet_quadratic.yaml", "modelnet_folded.yaml"):
        assert required in names
    for name in names:
        cfg = load_config(CONFIG_DIR / name)
        assert cfg["extends"] is None
    assert load_config(CONFIG_DIR / "modelnet.yaml")["data"]["name"] == "modelnet40"
    assert load_config(CONFIG_DIR / "modelnet.yaml")["data"]["num_points"] == 1024
    assert {b["kind"] for b in load_config(CONFIG_DIR / "modelnet_quadratic.yaml")["model"]["blocks"]} >= {"quadratic"}
    assert {b["kind"] for b in load_config(CONFIG_DIR / "modelnet_folded.yaml")["model"]["blocks"]} >= {"folded"}


def test_default_yaml_lists_every_key():
    # default.yaml is the documented reference: it names every key of the schema (values may be
    # tuned for the embedded default run, e.g. epochs and learning rate).
    raw = yaml.safe_load((CONFIG_DIR / "default.yaml").read_text())

    def leaves(cfg):  # block lists are validated block by block, not listed key by key
        return {k for k in flatten(cfg) if not k.startswith("model.blocks.")}

    assert leaves(raw) == leaves(defaults()) - {"extends"}
    assert raw["model"]["blocks"]
    assert load_config(None) == load_config(CONFIG_DIR / "default.yaml")


def test_unknown_key_names_key_nearest_and_file(tmp_path):
    path = _write(tmp_path, "train:\n  epoch: 5\n")
    with pytest.raises(ConfigError) as e:
        load_config(path)
    msg = str(e.value)
    assert "'train.epoch'" in msg and "did you mean 'epochs'" in msg and str(path) in msg


def test_misplaced_key_points_to_its_section(tmp_path):
    path = _write(tmp_path, "epochs: 5\n")
    with pytest.raises(ConfigError, match=r"unknown key 'epochs'; did you mean 'train.epochs' or 'train.teleport.epochs'\?") as e:
        load_config(path)
    assert str(path) in str(e.value)
    path = _write(tmp_path, "data:\n  every: 2\n")
    with pytest.raises(ConfigError, match=r"unknown key 'data.every'; did you mean 'spectrum.every'\?"):
        load_config(path)


def test_teleport_and_spectrum_sections(tmp_path):
    cfg = load_config(None)
    assert cfg["train"]["teleport"]["enabled"] is False and cfg["spectrum"]["enabled"] is False
    cfg = load_config(None, ["train.teleport.enabled=true", "train.teleport.epochs=[0, 2]", "spectrum.every=1"])
    assert cfg["train"]["teleport"]["epochs"] == [0, 2] and cfg["spectrum"]["every"] == 1
    with pytest.raises(ConfigError, match=r"train.teleport.group: must be one of scaling, gl, auto"):
        load_config(None, ["train.teleport.group=rotation"])
    with pytest.raises(ConfigError, match=r"train.teleport.epochs: items must be >= 0, got -1"):
        load_config(None, ["train.teleport.epochs=[-1]"])
    with pytest.raises(ConfigError, match=r"unknown key 'train.teleport.max_teleport'.*'max_teleports'"):
        load_config(None, ["train.teleport.max_teleport=2"])


def test_unknown_block_key(tmp_path):
    path = _write(tmp_path, "model:\n  blocks:\n    - {kind: linear, unit: 8}\n")
    with pytest.raises(ConfigError, match=r"model.blocks\[0\].*'unit'.*did you mean 'units'") as e:
        load_config(path)
    assert str(path) in str(e.value)
    path = _write(tmp_path, "model:\n  blocks:\n    - {kind: linear, units: 8, symmetric: true}\n")
    with pytest.raises(ConfigError, match="belongs to 'quadratic' blocks"):
        load_config(path)


@pytest.mark.parametrize("text, match", [
    ("train:\n  epochs: five\n", r"train.epochs: must be an integer, got 'five'"),
    ("train:\n  epochs: 0\n", r"train.epochs: must be >= 1, got 0"),
    ("train:\n  learning_rate: 0\n", r"train.learning_rate: must be > 0.0"),
    ("train:\n  learning_rate: '1e-3'\n", r"must be a number"),
    ("train:\n  xla: 'yes'\n", r"train.xla: must be true or false"),
    ("train:\n  strategy: mirored\n", r"must be one of .*did you mean 'mirrored'"),
    ("model:\n  head_dropout: 1.0\n", r"model.head_dropout: must be < 1.0"),
    ("data:\n  buckets: [64, 32]\n", r"data.buckets: must be increasing"),
    # modelnet10 and modelnet40 are equally close: both are named.
    ("data:\n  name: modelnet20\n", r"unknown dataset 'modelnet20'.*did you mean 'modelnet40' or 'modelnet10'"),
    ("data: 5\n", r"'data' must be a mapping"),
    ("model:\n  blocks: []\n", r"non-empty list"),
    ("model:\n  blocks:\n    - {kind: folded, units: 4}\n", r"cannot be the first block"),
    ("model:\n  blocks:\n    - {kind: quadratic, units: 4, pooling: max}\n", r"pools with sum or mean"),
    ("- 1\n- 2\n", r"top level must be a mapping"),
    ("train: [\n", r"not valid YAML"),
])
def test_bad_values_fail_with_the_rule_and_the_file(tmp_path, text, match):
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError, match=match) as e:
        load_config(path)
    assert str(path) in str(e.value) or "--set" in str(e.value) or "YAML" in str(e.value) \
        or "first block" in str(e.value) or "increasing" in str(e.value) or "pools" in str(e.value) \
        or "dataset" in str(e.value)


def test_overrides(tmp_path):
    cfg = load_config(None, ["train.epochs=3", "data.buckets=[32, 64]", "model.head=[16, 8]",
                             "train.strategy=mirrored", "mlflow.tracking_uri=http://127.0.0.1:5000"])
    assert cfg["train"]["epochs"] == 3 and cfg["data"]["buckets"] == [32, 64]
    assert cfg["model"]["head"] == [16, 8] and cfg["mlflow"]["tracking_uri"] == "http://127.0.0.1:5000"
    with pytest.raises(ConfigError, match=r"unknown key 'train.epcohs'.*did you mean 'epochs'.*--set train.epcohs=3"):
        load_config(None, ["train.epcohs=3"])
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        load_config(None, ["train.epochs"])
    with pytest.raises(ConfigError, match=r"train.epochs: must be >= 1, got -1 in --set"):
        load_config(None, ["train.epochs=-1"])


def test_extends_and_missing_file(tmp_path):
    _write(tmp_path, "train:\n  epochs: 7\n  learning_rate: 0.01\n", "base.yaml")
    child = _write(tmp_path, "extends: base.yaml\ntrain:\n  epochs: 2\n")
    cfg = load_config(child)
    assert cfg["train"]["epochs"] == 2 and cfg["train"]["learning_rate"] == 0.01
    loop = _write(tmp_path, "extends: loop.yaml\n", "loop.yaml")
    with pytest.raises(ConfigError, match="loops back"):
        load_config(loop)
    with pytest.raises(ConfigError, match=r"not found; the shipped configs are: .*default.yaml"):
        load_config(tmp_path / "nope.yaml")


def test_flatten_and_dump_round_trip():
    cfg = load_config(None)
    flat = flatten(cfg)
    assert flat["train.epochs"] == cfg["train"]["epochs"]
    assert flat["model.blocks.0.kind"] == cfg["model"]["blocks"][0]["kind"]
    path = pathlib.Path("/nonexistent")  # dump is plain YAML that loads back to the same config
    import yaml

    assert {**yaml.safe_load(dump(cfg)), "extends": None} == cfg
    del path


def test_docs_list_every_key():
    doc = (CONFIG_DIR.parent / "docs" / "training.md").read_text()
    leaves = {k for k in flatten(defaults()) if not k.startswith(("model.blocks.", "data.augment."))}
    missing = [k for k in sorted(leaves) if f"| `{k}` |" not in doc]
    assert not missing, f"docs/training.md lacks rows for {missing}"
    from pipelines.config import BLOCK_SCHEMA

    block_keys = {k for fields in BLOCK_SCHEMA.values() for k in fields}
    assert not [k for k in block_keys if f"| `{k}` |" not in doc]


def test_teleport_section_matches_the_callbacks_keys_and_defaults():
    # The schema validates train.teleport; TeleportCallback.from_config_section consumes it. A key
    # added to one and not the other would be refused by the schema or silently dropped.
    from pipelines.config import defaults
    from setnet.teleport import CONFIG_DEFAULTS

    section = defaults()["train"]["teleport"]
    assert set(section) == set(CONFIG_DEFAULTS)
    for key, value in CONFIG_DEFAULTS.items():
        assert list(section[key]) == value if isinstance(value, list) else section[key] == value, key


def test_teleport_max_grad_growth_is_validated():
    from pipelines.config import ConfigError, load_config

    assert load_config(None, ["train.teleport.max_grad_growth=8"])["train"]["teleport"]["max_grad_growth"] == 8.0
    with pytest.raises(ConfigError, match="max_grad_growth"):
        load_config(None, ["train.teleport.max_grad_growth=0.5"])
