"""TFDS point-cloud datasets: `modelnet40`/`modelnet10`, `synthetic_shapes`, `digits`, and the user's
own sets: `set_folder` (one file per set) and `set_table` (a long table of points), docs/own-data.md.

Each dataset lives in its own TFDS folder (builder, `checksums.tsv`, README, test). This module holds
what they share: the error types, the default directories and `prepare`, which turns a dataset name
("modelnet40", "synthetic_shapes/small", ...) into a prepared `tfds.core.DatasetBuilder`.

Importing this module does not import TensorFlow, so the error types are cheap to catch.

Example:

    from pipelines import datasets
    builder = datasets.prepare("synthetic_shapes/small", data_dir="/tmp/tfds")
    print(builder.info.splits["train"].num_examples)
"""

from __future__ import annotations

import os
import pathlib

DATASETS = ("synthetic_shapes", "digits", "modelnet40", "modelnet10", "set_folder", "set_table")
# Builders of the user's own data: their parameters (path, columns, ...) replace a config name.
USER_DATASETS = ("set_folder", "set_table")

# Not a TFDS dataset name: where a Builder finds what it needs without the network.
_PROJECT_ROOT = pathlib.Path(__file__).resolve().parents[2]


class DataNotFoundError(FileNotFoundError):
    """The data a dataset needs is not on this machine; the message says how to get it."""


class IncompleteDataError(DataNotFoundError):
    """Only part of a dataset was found and the caller did not allow a partial copy."""


class DownloadError(DataNotFoundError):
    """A download could not be started or did not complete; nothing was kept of it."""


class DataFormatError(ValueError):
    """A data file is truncated, corrupt or inconsistent; the message names the file."""


def _project_dir() -> pathlib.Path:
    # An editable install (the project's own Makefile) keeps data inside the checkout; an installed
    # wheel has no checkout, so the working directory stands in for it.
    if (_PROJECT_ROOT / "pyproject.toml").exists():
        return _PROJECT_ROOT
    return pathlib.Path.cwd()


def default_data_dir() -> pathlib.Path:
    """Where prepared TFDS datasets go: $TFDS_DATA_DIR, else `data/tfds` in the project (git-ignored)."""
    env = os.environ.get("TFDS_DATA_DIR")
    return pathlib.Path(env).expanduser() if env else _project_dir() / "data" / "tfds"


def default_manual_dir() -> pathlib.Path:
    """Where ModelNet files are looked for: $SETNET_MODELNET_DIR, else `data/manual/modelnet`."""
    env = os.environ.get("SETNET_MODELNET_DIR")
    return pathlib.Path(env).expanduser() if env else _project_dir() / "data" / "manual" / "modelnet"


def _split_name(name: str) -> tuple[str, str | None]:
    base, _, config = name.partition("/")
    if base not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)} "
                         "(optionally with a builder config, e.g. 'synthetic_shapes/small')")
    return base, config or None


def get_builder(name: str, *, data_dir=None, allow_partial: bool = False, source: str = "auto",
                params: dict | None = None):
    """Returns the TFDS builder for `name` without preparing it (the manual dir is given to `prepare`).

    Args:
      name: one of `DATASETS`, optionally "name/config" (e.g. "synthetic_shapes/small").
      data_dir: TFDS data dir; default `default_data_dir()`.
      allow_partial: ModelNet only: use the `<name>_partial` config, which accepts an incomplete copy.
      source: ModelNet only: "auto", "text", "hdf5" or "off" (which published form to read).
      params: `set_folder` / `set_table` only: the builder's parameters (`path`, `set_column`,
        `target_column`, ...; see their `make_config`), e.g. {"path": "data/my_sets"}.
    """
    base, config = _split_name(name)
    data_dir = str(pathlib.Path(data_dir).expanduser() if data_dir else default_data_dir())
    if base in USER_DATASETS:
        if config:
            raise ValueError(f"{base} takes no config name ({name!r}); pass its parameters (path, ...)")
        if not (params or {}).get("path"):
            raise ValueError(f"{base} needs the data's location: pass path (python -m pipelines.prepare "
                             f"{base} --path ...)")
        if base == "set_folder":
            from pipelines.datasets.set_folder import set_folder_dataset_builder as mod
        else:
            from pipelines.datasets.set_table import set_table_dataset_builder as mod
        return mod.Builder(data_dir=data_dir, **params)
    if params:
        raise ValueError(f"{base} takes no parameters {sorted(params)}; they are for {' and '.join(USER_DATASETS)}")
    if base == "synthetic_shapes":
        from pipelines.datasets.synthetic_shapes import synthetic_shapes_dataset_builder as mod
        return mod.Builder(data_dir=data_dir, config=config or "default")
    if base == "digits":
        from pipelines.datasets.digits import digits_dataset_builder as mod
        return mod.Builder(data_dir=data_dir, config=config)
    from pipelines.datasets.modelnet import modelnet_dataset_builder as mod
    if config is None:
        config = base + ("_partial" if allow_partial else "")
    elif not config.startswith(base):
        raise ValueError(f"config {config!r} does not belong to {base}")
    return mod.Builder(data_dir=data_dir, config=config, source=source)


def prepare(name: str, *, data_dir=None, manual_dir=None, allow_partial: bool = False,
            force: bool = False, source: str = "auto", params: dict | None = None, beam_options=None):
    """Prepares `name` unless it is prepared already, and returns its builder.

    With `allow_partial`, a complete copy is still preferred: a prepared full config is reused, then a
    prepared partial one; otherwise the full config is tried and only an incomplete copy goes to the
    `<name>_partial` config. `force` regenerates (e.g. after more ModelNet files were added).
    `manual_dir` (default `default_manual_dir()`) becomes TFDS's `DownloadConfig.manual_dir`. A
    failed attempt removes what it created in `data_dir` (completed downloads stay). `params` are
    `set_folder` / `set_table`'s parameters (see `get_builder`). `beam_options` (a list of Beam
    pipeline flags such as ["--runner=DirectRunner", "--direct_num_workers=2"]) prepares with Apache
    Beam through TFDS's `DownloadConfig(beam_options=...)`.

    Raises:
      DataNotFoundError: the data is not on this machine and cannot be downloaded (message says how).
      IncompleteDataError: part of ModelNet is missing and `allow_partial` is False.
      DataFormatError: a file is corrupt; nothing is left half-written in `data_dir`.
    """
    import tensorflow_datasets as tfds

    from pipelines.datasets.cleanup import undo_on_failure

    base, config = _split_name(name)
    mode = (tfds.download.GenerateMode.REUSE_CACHE_IF_EXISTS if force
            else tfds.download.GenerateMode.REUSE_DATASET_IF_EXISTS)
    manual_dir = pathlib.Path(manual_dir).expanduser() if manual_dir else default_manual_dir()
    beam = None
    if beam_options:
        from apache_beam.options.pipeline_options import PipelineOptions

        beam = PipelineOptions(list(beam_options))
    download_config = tfds.download.DownloadConfig(download_mode=mode, manual_dir=manual_dir, beam_options=beam)
    kwargs = dict(data_dir=data_dir, source=source, params=params)
    builder = get_builder(name, allow_partial=False, **kwargs)

    def build(b):
        with undo_on_failure(b.data_dir_root, b.name):
            b.download_and_prepare(download_config=download_config)

    def prepared(b):
        # TFDS's is_prepared() warns "Variant folder ... has no dataset_info.json" when the folder
        # is simply not there yet.
        return b.data_path.exists() and b.is_prepared()

    if base.startswith("modelnet") and allow_partial and config is None:
        partial = get_builder(name, allow_partial=True, **kwargs)
        if not force:
            for candidate in (builder, partial):
                if prepared(candidate):
                    return candidate
        try:
            build(builder)
            return builder
        except IncompleteDataError:
            builder = partial
    if force or not prepared(builder):
        build(builder)
    return builder


def load_prepared(name: str, *, data_dir=None, manual_dir=None, allow_partial: bool = False,
                  params: dict | None = None):
    """The builder of a prepared copy of `name` (a full one before a partial one), preparing it if
    there is none yet; never regenerates. Same errors as `prepare`."""
    return prepare(name, data_dir=data_dir, manual_dir=manual_dir, allow_partial=allow_partial, params=params)
