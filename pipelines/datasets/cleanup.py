"""Undoing a failed prepare: what the run created in the data dir goes, what was there stays.

TFDS writes a dataset into a temporary `incomplete.*` folder and renames it only at the end, but
before that it creates `<data_dir>/<name>/<config>/`, `<name>/.config/metadata.json` and
`downloads/extracted/`, and an interrupted download leaves `downloads/<name>/<file>.tmp.<id>/`. After a
failure those make every later run warn "Variant folder ... has no dataset_info.json".

Example:

    from pipelines.datasets.cleanup import undo_on_failure
    with undo_on_failure("/tmp/tfds", "modelnet"):
        builder.download_and_prepare()
"""

from __future__ import annotations

import contextlib
import pathlib
import shutil


def _entries(folder: pathlib.Path) -> set[pathlib.Path]:
    return set(folder.iterdir()) if folder.is_dir() else set()


def _tree(folder: pathlib.Path) -> set[pathlib.Path]:
    return set(folder.rglob("*")) | {folder} if folder.is_dir() else set()


class _Snapshot:
    """The paths a prepare of dataset `name` can create in `data_dir`.

    Only the dataset's own folder is listed in full; `downloads/` may hold other datasets' large
    extracted trees, so only its top level and those of `downloads/<name>/` (where TFDS downloads
    this dataset's files) and `downloads/extracted/` are listed.
    """

    def __init__(self, data_dir: pathlib.Path, name: str):
        self.data_dir, self.name = data_dir, name
        downloads = data_dir / "downloads"
        self.download_dirs = (downloads, downloads / name)
        self.listed = (*self.download_dirs, downloads / "extracted")
        self.paths = ({p for p in (data_dir, *self.listed) if p.exists()} | _tree(data_dir / name)
                      | set().union(*map(_entries, self.listed)))

    def _is_completed_download(self, path: pathlib.Path) -> bool:
        # TFDS writes `<file>.INFO` after a download passed its checks: a cache worth keeping,
        # not a half-written result (removing it would cost the next run the whole download).
        if path.parent not in self.download_dirs or not path.is_file():
            return False
        if path.name.endswith(".INFO"):
            return path.with_name(path.name[: -len(".INFO")]).is_file()
        return path.with_name(path.name + ".INFO").is_file()

    def remove_new(self) -> None:
        new = _Snapshot(self.data_dir, self.name).paths - self.paths
        # A dataset folder with dataset_info.json was finished by a concurrent run: not ours.
        finished = {p.parent for p in new if p.name == "dataset_info.json"}
        for path in sorted(new, key=lambda p: len(p.parts), reverse=True):
            if (finished & {path, *path.parents}) or self._is_completed_download(path):
                continue
            if path.is_dir() and not path.is_symlink():
                if path.parent in self.listed and path not in self.listed:
                    shutil.rmtree(path, ignore_errors=True)  # listed without its contents
                else:
                    with contextlib.suppress(OSError):
                        path.rmdir()  # emptied above, unless it holds something to keep
            else:
                path.unlink(missing_ok=True)


@contextlib.contextmanager
def undo_on_failure(data_dir, name: str):
    """On any exception (Ctrl-C included) inside the block, removes what appeared in `data_dir` for
    dataset `name` during it, except completed downloads; then re-raises."""
    snapshot = _Snapshot(pathlib.Path(data_dir), name)
    try:
        yield
    except BaseException:
        snapshot.remove_new()
        raise
