"""`modelnet`: ModelNet40 and ModelNet10 from any of their three published forms.

Configs: `modelnet40`, `modelnet10` (complete copies only) and `modelnet40_partial`,
`modelnet10_partial` (whatever part is there; the summary says how much). The data is looked for in
the manual directory (`--manual-dir`, $SETNET_MODELNET_DIR, `data/manual/modelnet`) and in this data
dir's `downloads/modelnet`, as directories or zip archives; when nothing is found the archives in
`checksums.tsv` are downloaded if their host answers within seconds, else `DataNotFoundError` says
how to get the data. See README.md and `sources.py` for the formats.

Example:

    from pipelines.datasets.modelnet.modelnet_dataset_builder import Builder
    builder = Builder(data_dir="/tmp/tfds", config="modelnet40_partial", manual_dir="/data/modelnet")
    builder.download_and_prepare()
    builder.info.metadata["found"]      # {"train": ..., "test": ...}
"""

from __future__ import annotations

import dataclasses
import pathlib

import numpy as np
import tensorflow_datasets as tfds

from pipelines import datasets
from pipelines.datasets import (DataNotFoundError, DownloadError, IncompleteDataError)
from pipelines.datasets.modelnet import download, sources

POINTS_PER_SHAPE = 2048
_HERE = pathlib.Path(__file__).parent

_INSTRUCTIONS = """\
Get one of the three published forms of ModelNet and put it, zipped or extracted, in {manual}
(or pass --manual-dir DIR / set SETNET_MODELNET_DIR):
  - PointNet++ text release modelnet40_normal_resampled (modelnet40_normal_resampled.zip, 1.7 GB;
    <class>/<class>_<nnnn>.txt and the split lists modelnet40_train.txt / modelnet40_test.txt);
  - PointNet HDF5 release modelnet40_ply_hdf5_2048.zip (435,212,151 bytes, sha256
    07670e237db72ece0f723b9abb571534c9ad655a6456b389646587dc72bb8bae), formerly at
    https://shapenet.cs.stanford.edu/media/modelnet40_ply_hdf5_2048.zip (refused since ~2024);
  - Princeton meshes ModelNet40.zip (2,039,180,837 bytes, sha256
    42dc3e656932e387f554e25a4eb2cc0e1a1bd3ab54606e2a9eae444c60e536ac) from
    http://modelnet.cs.princeton.edu/ModelNet40.zip, or ModelNet10.zip for modelnet10.
Then run: python -m pipelines.prepare {variant} --manual-dir DIR"""


@dataclasses.dataclass(eq=False)
class ModelNetConfig(tfds.core.BuilderConfig):
    """Which ModelNet and whether an incomplete copy is accepted."""

    variant: str = "modelnet40"
    partial: bool = False
    points_per_shape: int = POINTS_PER_SHAPE


def _configs():
    out = []
    for variant, n in (("modelnet40", 40), ("modelnet10", 10)):
        out.append(ModelNetConfig(name=variant, variant=variant,
                                  description=f"ModelNet{n}, complete copies only"))
        out.append(ModelNetConfig(name=f"{variant}_partial", variant=variant, partial=True,
                                  description=f"ModelNet{n}, whatever part of it is present"))
    return out


def _download_candidates(variant: str) -> list[download.Remote]:
    """Archives to try, smallest first (tests replace this to point at a local server)."""
    return sorted(download.read_checksums(_HERE / "checksums.tsv"), key=lambda r: r.size)


class Builder(tfds.core.GeneratorBasedBuilder):
    """ModelNet40 / ModelNet10 point clouds (2048 points, unit sphere, y up) with normals."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release: text, HDF5 and mesh sources."}
    BUILDER_CONFIGS = _configs()
    DEFAULT_CONFIG_NAME = "modelnet40"
    MANUAL_DOWNLOAD_INSTRUCTIONS = _INSTRUCTIONS.format(manual="the manual directory", variant="modelnet40")

    def __init__(self, *, manual_dir=None, source: str = "auto", **kwargs):
        if source not in ("auto", "text", "hdf5", "off"):
            raise ValueError(f"source must be auto, text, hdf5 or off, got {source!r}")
        self._manual_dir = pathlib.Path(manual_dir).expanduser() if manual_dir else None
        self._source_kind = source
        super().__init__(**kwargs)

    @property
    def manual_dir(self) -> pathlib.Path:
        return self._manual_dir or datasets.default_manual_dir()

    @property
    def downloads_dir(self) -> pathlib.Path:
        return pathlib.Path(self._data_dir_root) / "downloads" / "modelnet"

    def _info(self) -> tfds.core.DatasetInfo:
        cfg = self.builder_config
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict({
                "points": tfds.features.Tensor(shape=(None, 3), dtype=np.float32),
                "normals": tfds.features.Tensor(shape=(None, 3), dtype=np.float32),
                "label": tfds.features.ClassLabel(names=sources.CLASSES[cfg.variant]),
                "shape_id": tfds.features.Text(),
            }),
            supervised_keys=("points", "label"),
            metadata=tfds.core.MetadataDict(),
            homepage="https://modelnet.cs.princeton.edu/",
            citation=("Wu et al., 3D ShapeNets: A Deep Representation for Volumetric Shapes, CVPR 2015."),
        )

    def _not_found(self, why: str, download_errors) -> DataNotFoundError:
        variant = self.builder_config.variant
        lines = [f"{variant}: no ModelNet data found: {why}."]
        if download_errors:
            lines.append("Downloading failed too:")
            lines += [f"  - {e}" for e in download_errors]
        lines.append(_INSTRUCTIONS.format(manual=self.manual_dir, variant=variant))
        return DataNotFoundError("\n".join(lines))

    def _locate(self):
        cfg = self.builder_config
        roots = [self.manual_dir, self.downloads_dir]
        found = sources.choose(sources.find_sources(roots), cfg.variant, self._source_kind)
        if found:
            return found
        if not self.manual_dir.exists():
            why = f"the manual directory {self.manual_dir} does not exist"
        elif not any(self.manual_dir.iterdir()):
            why = f"the manual directory {self.manual_dir} is empty"
        else:
            kind = "" if self._source_kind == "auto" else f" of the {self._source_kind!r} form"
            why = f"{self.manual_dir} holds no recognised ModelNet files{kind}"
        errors = []
        for remote in _download_candidates(cfg.variant):
            try:
                download.fetch(remote, self.downloads_dir)
            except DownloadError as e:
                errors.append(str(e))
                continue
            found = sources.choose(sources.find_sources([self.downloads_dir]), cfg.variant, self._source_kind)
            if found:
                return found
        raise self._not_found(why, errors)

    def _split_generators(self, dl_manager):
        del dl_manager  # downloads go through `download.fetch` (fail fast, verified)
        cfg = self.builder_config
        source, inv = self._locate()
        counts = ", ".join(f"{inv.found(s)} of {inv.expected[s]} {s}" for s in sources.SPLITS)
        if not inv.complete and not cfg.partial:
            missing = sum(inv.missing(s) for s in sources.SPLITS)
            example = f" (e.g. {', '.join(inv.missing_examples)})" if inv.missing_examples else ""
            raise IncompleteDataError(
                f"{cfg.variant}: the copy at {source.location} ({source.title}) is incomplete: found "
                f"{counts} shapes, {missing} missing{example}. Complete it, or pass --allow-partial "
                "(allow_partial=True) to prepare only what is there.")
        self.info.metadata.update({
            "source": source.kind, "source_title": source.title,
            "source_location": source.location, "partial": not inv.complete,
            "found": {s: inv.found(s) for s in sources.SPLITS}, "expected": dict(inv.expected),
            "points_per_shape": cfg.points_per_shape, "up_axis": 1, "spatial_axes": [0, 1, 2],
        })
        return {s: self._generate_examples(source, inv.items[s]) for s in sources.SPLITS if inv.found(s)}

    def _generate_examples(self, source, items):
        for shape_id, label, points, normals in source.examples(items, self.builder_config.points_per_shape):
            yield shape_id, {"points": points, "normals": normals, "label": label, "shape_id": shape_id}
