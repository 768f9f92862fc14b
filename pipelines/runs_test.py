"""`runs.check_folders`: which folders a run's tasks must be able to write, and which it leaves alone.
(The messages and that nothing is created: pipelines/train_test.py, through `main`.)"""

import pytest

from pipelines.config import ConfigError, load_config
from pipelines.runs import check_folders

_BAD = "/proc/setnet-test-folder"  # /proc cannot be written even by root


def _config(tmp_path, *overrides):
    return load_config(None, [f"runs_dir={tmp_path / 'runs'}", f"data.data_dir={tmp_path / 'tfds'}",
                              f"export.root={tmp_path / 'exports'}", *overrides])


def test_writable_folders_pass_and_are_not_created(tmp_path):
    check_folders(_config(tmp_path, f"train.checkpoint_dir={tmp_path / 'ckpt'}"))
    assert list(tmp_path.iterdir()) == []


def test_the_export_root_is_checked_only_when_exporting(tmp_path):
    with pytest.raises(ConfigError, match="^export.root="):
        check_folders(_config(tmp_path, f"export.root={_BAD}"))
    check_folders(_config(tmp_path, f"export.root={_BAD}", "export.enabled=false"))


@pytest.mark.parametrize("key", ["data.data_dir", "train.checkpoint_dir"])
def test_remote_locations_are_not_probed(key, tmp_path):
    check_folders(_config(tmp_path, f"{key}=gs://setnet-no-such-bucket/x"))


def test_other_workers_check_only_their_data_dir(tmp_path):
    cfg = _config(tmp_path, f"runs_dir={_BAD}", f"export.root={_BAD}", f"train.checkpoint_dir={_BAD}")
    check_folders(cfg, chief=False)
    with pytest.raises(ConfigError, match="^data.data_dir="):
        check_folders(_config(tmp_path, f"data.data_dir={_BAD}"), chief=False)


def test_a_null_data_dir_names_where_its_folder_came_from(tmp_path, monkeypatch):
    monkeypatch.setenv("TFDS_DATA_DIR", _BAD)
    with pytest.raises(ConfigError) as e:
        check_folders(_config(tmp_path, "data.data_dir=null"))
    assert str(e.value).startswith(f"data.data_dir=null ($TFDS_DATA_DIR={_BAD}): prepared datasets cannot be "
                                   f"created there: /proc is not writable")
    assert str(e.value).endswith("--set data.data_dir=DIR or change $TFDS_DATA_DIR")
