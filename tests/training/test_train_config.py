"""Config loading and validation (pure Python: no TensorFlow here)."""

import re
import subprocess

import pytest
import yaml

from pipelines.config import CONFIG_DIR, Config, ConfigError, dump, flatten, load_config, reference_markdown


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
        assert isinstance(load_config(CONFIG_DIR / name), Config)
    assert load_config(CONFIG_DIR / "modelnet.yaml").data.name == "modelnet40"
    assert load_config(CONFIG_DIR / "modelnet.yaml").data.num_points == 1024
    assert {b.kind for b in load_config(CONFIG_DIR / "modelnet_quadratic.yaml").model.blocks} >= {"quadratic"}
    assert {b.kind for b in load_config(CONFIG_DIR / "modelnet_folded.yaml").model.blocks} >= {"folded"}


def test_default_yaml_lists_every_key():
    # default.yaml is the documented reference: it names every key of the schema (values may be
    # tuned for the embedded default run, e.g. epochs and learning rate).
    raw = yaml.safe_load((CONFIG_DIR / "default.yaml").read_text())

    def leaves(cfg):  # block lists are validated block by block, not listed key by key
        return {k for k in flatten(cfg) if not k.startswith("model.blocks.")}

    assert leaves(raw) == leaves(Config())
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
    assert cfg.train.teleport.enabled is False and cfg.spectrum.enabled is False
    cfg = load_config(None, ["train.teleport.enabled=true", "train.teleport.epochs=[0, 2]", "spectrum.every=1"])
    assert cfg.train.teleport.epochs == (0, 2) and cfg.spectrum.every == 1
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
    ("export:\n  root: gs://bucket/exports\n", r"export.root: exports are written to a local folder"),
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
        or "dataset" in str(e.value) or "local folder" in str(e.value)


def test_overrides(tmp_path):
    cfg = load_config(None, ["train.epochs=3", "data.buckets=[32, 64]", "model.head=[16, 8]",
                             "train.strategy=mirrored", "mlflow.tracking_uri=http://127.0.0.1:5000"])
    assert cfg.train.epochs == 3 and cfg.data.buckets == (32, 64)
    assert cfg.model.head == (16, 8) and cfg.mlflow.tracking_uri == "http://127.0.0.1:5000"
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
    assert cfg.train.epochs == 2 and cfg.train.learning_rate == 0.01
    loop = _write(tmp_path, "extends: loop.yaml\n", "loop.yaml")
    with pytest.raises(ConfigError, match="loops back"):
        load_config(loop)
    with pytest.raises(ConfigError, match=r"not found; the shipped configs are: .*default.yaml"):
        load_config(tmp_path / "nope.yaml")


def test_flatten_and_dump_round_trip(tmp_path):
    cfg = load_config(None)
    flat = flatten(cfg)
    assert flat["train.epochs"] == cfg.train.epochs
    assert flat["model.blocks.0.kind"] == cfg.model.blocks[0].kind
    # dump is plain YAML (no Python tags) that loads back to the same config
    assert yaml.safe_load(dump(cfg)) == cfg.to_dict()
    path = tmp_path / "dumped.yaml"
    path.write_text(dump(cfg))
    assert load_config(path) == cfg


def test_docs_list_every_key():
    # The tables are generated from the dataclasses (python -m pipelines.config): every row, with its
    # type, default, rule and meaning, must be in the docs as generated.
    doc = (CONFIG_DIR.parent / "docs" / "training.md").read_text()
    leaves = {k for k in flatten(Config()) if not k.startswith(("model.blocks.", "data.augment."))}
    missing = [k for k in sorted(leaves) if f"| `{k}` |" not in doc]
    assert not missing, f"docs/training.md lacks rows for {missing}"
    stale = [row for row in reference_markdown().splitlines() if row.startswith("| `") and row not in doc]
    assert not stale, "docs/training.md differs from `python -m pipelines.config` in:\n" + "\n".join(stale)


def test_teleport_section_is_the_callbacks_own_dataclass():
    # One definition: the training config's train.teleport is setnet.teleport's section, and the
    # callback built from the resolved config carries its values.
    from setnet.teleport import TeleportCallback, TeleportConfig

    cfg = load_config(None, ["train.teleport.enabled=true", "train.teleport.epochs=[1, 2]"])
    assert type(cfg.train.teleport) is TeleportConfig
    cb = TeleportCallback.from_config_section(cfg.train.teleport, ([[0.0]], [0]))
    assert cb.epochs == [1, 2] and cb.max_teleports == TeleportConfig().max_teleports


def test_teleport_max_grad_growth_is_validated():
    assert load_config(None, ["train.teleport.max_grad_growth=8"]).train.teleport.max_grad_growth == 8.0
    with pytest.raises(ConfigError, match="max_grad_growth"):
        load_config(None, ["train.teleport.max_grad_growth=0.5"])


def test_yaml_1_2_numbers_in_files_and_overrides(tmp_path):
    # PyYAML's YAML 1.1 resolver reads 1e-3 as a string; configs read numbers as YAML 1.2 does.
    path = _write(tmp_path, "train:\n  learning_rate: 1e-3\n  weight_decay: 5E-5\n  epochs: 1e1\n")
    cfg = load_config(path)
    assert cfg.train.learning_rate == 0.001 and cfg.train.weight_decay == 5e-5 and cfg.train.epochs == 10
    assert load_config(None, ["train.learning_rate=1e-3"]).train.learning_rate == 0.001
    assert load_config(None, ["train.teleport.learning_rate=+2.5e-1"]).train.teleport.learning_rate == 0.25
    # Still strings: quoted numbers and names that merely start with digits.
    assert load_config(None, ["experiment=1e3x"]).experiment == "1e3x"
    with pytest.raises(ConfigError, match=r"train.learning_rate: must be a number, got '1e-3'"):
        load_config(None, ["train.learning_rate='1e-3'"])


def test_extends_looks_next_to_the_file_then_in_the_shipped_configs(tmp_path):
    child = _write(tmp_path, "extends: digits.yaml\ntrain:\n  epochs: 2\n")
    cfg = load_config(child)
    assert cfg.data.name == "digits" and cfg.train.epochs == 2  # configs/digits.yaml
    _write(tmp_path, "extends: default.yaml\ndata:\n  num_points: 48\n", "digits.yaml")
    cfg = load_config(child)
    assert cfg.data.name == "synthetic_shapes" and cfg.data.num_points == 48  # the local one wins
    missing = _write(tmp_path, "extends: nope.yaml\n", "m.yaml")
    with pytest.raises(ConfigError, match=rf"extends: 'nope.yaml' is neither next to {missing} nor in "
                                          r".*configs \(shipped: .*default.yaml"):
        load_config(missing)


def _write_bytes(path, data):
    path.write_bytes(data)
    return path


def _cli(argv, capsys):
    from pipelines.train import main

    code = main(argv)
    err = capsys.readouterr().err
    return code, err


@pytest.mark.parametrize("make, fragment", [
    (lambda d: d, "is a directory"),
    (lambda d: _write(d, "", "missing.yaml").unlink() or d / "missing.yaml", "not found; the shipped configs are"),
    (lambda d: _write_bytes(d / "latin1.yaml", "experiment: caf\xe9\n".encode("latin-1")),
     "is not UTF-8 text (byte 15); save it as UTF-8"),
    (lambda d: _write(d, "train:\n  epochs: [1,\n", "broken.yaml"), "is not valid YAML: line 3, column 1:"),
    (lambda d: _write(d, "- epochs\n", "list.yaml"), "the top level must be a mapping of keys"),
    (lambda d: _write(d, "just text\n", "text.yaml"), "the top level must be a mapping of keys"),
])
def test_unreadable_configs_exit_2_with_one_line_naming_the_file(tmp_path, capsys, make, fragment):
    path = make(tmp_path)
    code, err = _cli(["--config", str(path)], capsys)
    assert code == 2
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    assert str(path) in err and fragment in err, err


def test_every_set_hint_in_messages_and_docs_is_a_working_override():
    # A hint like "--set data.allow_partial=true" must be accepted by the command it is written for.
    root = CONFIG_DIR.parent
    files = [*root.glob("pipelines/**/*.py"), *root.glob("docs/*.md"), root / "Makefile"]
    hints = set()
    for path in files:
        # Quoted error examples ("error: ... in --set train.strategy=mirored") are not hints.
        text = "\n".join(line for line in path.read_text(encoding="utf-8").splitlines() if "error: " not in line)
        for key, value in re.findall(r"--set ((?:data|model|train|spectrum|export|mlflow)\.[a-z_.]+)=([^\s`'\")]+)",
                                     text):
            value = value.rstrip(".,;:")
            if value and value != "...":
                hints.add(f"{key}={value}")
    assert "data.allow_partial=true" in hints and "data.manual_dir=DIR" in hints
    for hint in sorted(hints):
        load_config(None, [hint])


def test_makefile_train_passes_args_on():
    proc = subprocess.run(["make", "-n", "train", "ARGS=--set train.epochs=1", "CONFIG=configs/digits.yaml"],
                          cwd=CONFIG_DIR.parent, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "-m pipelines.train --config configs/digits.yaml --set train.epochs=1" in proc.stdout


def test_prepare_names_the_known_datasets_for_an_unknown_one(capsys):
    from pipelines.prepare import main

    assert main(["modelnet20"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "did you mean 'modelnet40' or 'modelnet10'?" in err
    assert "known: synthetic_shapes, digits, modelnet40, modelnet10" in err


def test_rules_across_keys_see_all_overrides():
    # configs/modelnet.yaml warms up for 2 epochs: one epoch is fine once warm-up is off too,
    # whichever --set comes first.
    cfg = load_config(CONFIG_DIR / "modelnet.yaml", ["train.epochs=1", "train.warmup_epochs=0"])
    assert (cfg.train.epochs, cfg.train.warmup_epochs) == (1, 0)
    with pytest.raises(ConfigError, match=r"train.warmup_epochs: must be less than train.epochs \(1\), got 2 "
                                          r"in --set train.epochs=1$"):
        load_config(CONFIG_DIR / "modelnet.yaml", ["train.epochs=1"])
