"""`modelnet`: ModelNet40 and ModelNet10 from any of their three published forms.

Configs: `modelnet40`, `modelnet10` (complete copies only) and `modelnet40_partial`,
`modelnet10_partial` (whatever part is there; the summary says how much). The data is looked for, as
directories or zip archives, in TFDS's manual directory (`DownloadConfig(manual_dir=...)`,
`tfds build --manual_dir`, `python -m pipelines.prepare --manual-dir`; TFDS's default is
`<data_dir>/downloads/manual`), then in the fallback `$SETNET_MODELNET_DIR` (else `data/manual/modelnet`
in the project), then among archives TFDS downloaded before. When nothing is found, the archives in
`checksums.tsv` are downloaded through TFDS's download manager (which checks their size and sha256)
if their host answers within seconds; else `DataNotFoundError` says how to get the data. See
README.md and `sources.py` for the formats.

Example:

    import tensorflow_datasets as tfds
    from pipelines.datasets.modelnet.modelnet_dataset_builder import Builder
    builder = Builder(data_dir="/tmp/tfds", config="modelnet40_partial")
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir="/data/modelnet"))
    builder.info.metadata["found"]      # {"train": ..., "test": ...}
"""

from __future__ import annotations

import dataclasses
import pathlib
import socket
import urllib.parse

import numpy as np
import tensorflow_datasets as tfds

from pipelines import datasets
from pipelines.datasets import DataNotFoundError, DownloadError, IncompleteDataError
from pipelines.datasets.cleanup import undo_on_failure
from pipelines.datasets.modelnet import sources

POINTS_PER_SHAPE = 2048
CONNECT_TIMEOUT_S = 10.0

_INSTRUCTIONS = """\
Get one of the three published forms of ModelNet and put it, zipped or extracted, in {manual}
(or pass --manual-dir DIR to pipelines.prepare, --set data.manual_dir=DIR to pipelines.train, or
tfds build --manual_dir DIR; fallback: SETNET_MODELNET_DIR):
  - PointNet++ text release modelnet40_normal_resampled (modelnet40_normal_resampled.zip, 1.7 GB;
    <class>/<class>_<nnnn>.txt and the split lists modelnet40_train.txt / modelnet40_test.txt);
  - PointNet HDF5 release modelnet40_ply_hdf5_2048.zip (435,212,151 bytes, sha256
    07670e237db72ece0f723b9abb571534c9ad655a6456b389646587dc72bb8bae), formerly at
    https://shapenet.cs.stanford.edu/media/modelnet40_ply_hdf5_2048.zip (refused since ~2024);
  - Princeton meshes ModelNet40.zip (2,039,180,837 bytes, sha256
    42dc3e656932e387f554e25a4eb2cc0e1a1bd3ab54606e2a9eae444c60e536ac) from
    http://modelnet.cs.princeton.edu/ModelNet40.zip, or ModelNet10.zip for modelnet10.
Then run: python -m pipelines.prepare {variant} --manual-dir DIR"""


def check_reachable(url: str, timeout: float = CONNECT_TIMEOUT_S) -> None:
    """Raises `DownloadError` at once when `url`'s host refuses or does not answer within `timeout`.

    The one thing TFDS's download manager cannot do for us: it connects through `requests` with no
    connect timeout and retries a refused connection 10 times with backoff, so against the PointNet
    host (refusing since ~2024) or a firewalled one `download_and_prepare` waits minutes, or forever.
    Everything after the connection (streaming, size and sha256 against `checksums.tsv`, caching)
    is left to TFDS.
    """
    parts = urllib.parse.urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        socket.create_connection((parts.hostname, port), timeout=timeout).close()
    except OSError as e:
        reason = "timed out" if isinstance(e, TimeoutError) else (e.strerror or str(e))
        raise DownloadError(f"cannot download {url}: {reason}") from e


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


class Builder(tfds.core.GeneratorBasedBuilder):
    """ModelNet40 / ModelNet10 point clouds (2048 points, unit sphere, y up) with normals."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release: text, HDF5 and mesh sources."}
    BUILDER_CONFIGS = _configs()
    DEFAULT_CONFIG_NAME = "modelnet40"
    MANUAL_DOWNLOAD_INSTRUCTIONS = _INSTRUCTIONS.format(manual="the manual directory", variant="modelnet40")

    def __init__(self, *, source: str = "auto", **kwargs):
        if source not in ("auto", "text", "hdf5", "off"):
            raise ValueError(f"source must be auto, text, hdf5 or off, got {source!r}")
        self._source_kind = source
        self._manual_dir_given = None
        super().__init__(**kwargs)

    def download_and_prepare(self, *, download_dir=None, download_config=None, **kwargs):
        # Remembered for the error message only: TFDS's `dl_manager.manual_dir` refuses a missing
        # or an empty folder alike, without naming it.
        given = download_config.manual_dir if download_config else None
        self._manual_dir_given = pathlib.Path(given).expanduser() if given else None
        # Also under `tfds build`: a failed run (no data, interrupted download) leaves nothing.
        with undo_on_failure(self.data_dir_root, self.name):
            return super().download_and_prepare(download_dir=download_dir, download_config=download_config,
                                                **kwargs)

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

    def _choose(self, roots):
        return sources.choose(sources.find_sources(roots), self.builder_config.variant, self._source_kind)

    def _locate(self, dl_manager):
        """(source, inventory) of the first place with ModelNet data: manual dir, fallback, downloads."""
        manual = self._manual_dir_given or pathlib.Path(dl_manager.download_dir) / "manual"
        try:
            manual = pathlib.Path(dl_manager.manual_dir)
            usable = True
        except AssertionError:  # TFDS: the manual dir is missing or empty
            usable = False
        fallback = datasets.default_manual_dir()
        # Archives TFDS downloaded earlier (into downloads/modelnet/, or downloads/ in its legacy
        # layout): it writes `<file>.INFO` once a download is complete and verified.
        download_dir = pathlib.Path(dl_manager.download_dir)
        cached = sorted(p for d in (download_dir / self.name, download_dir) for p in d.glob("*.zip")
                        if p.with_name(p.name + ".INFO").exists())
        for roots in ([manual] if usable else [], [fallback] if fallback != manual else [], cached):
            found = self._choose(roots) if roots else None
            if found:
                return found
        if not manual.exists():
            why = f"the manual directory {manual} does not exist"
        elif not usable:
            why = f"the manual directory {manual} is empty"
        else:
            kind = "" if self._source_kind == "auto" else f" of the {self._source_kind!r} form"
            why = f"{manual} holds no recognised ModelNet files{kind}"
        if fallback != manual:
            why += f", nor does {fallback}"
        errors = []
        infos = self.url_infos or {}
        for url in sorted(infos, key=lambda u: infos[u].size):  # smallest first
            try:
                path = self._download(dl_manager, url)
            except DownloadError as e:
                errors.append(str(e))
                continue
            found = self._choose([path])
            if found:
                return found
        lines = [f"{self.builder_config.variant}: no ModelNet data found: {why}."]
        if errors:
            lines += ["Downloading failed too:"] + [f"  - {e}" for e in errors]
        lines.append(_INSTRUCTIONS.format(manual=manual, variant=self.builder_config.variant))
        raise DataNotFoundError("\n".join(lines))

    @staticmethod
    def _download(dl_manager, url: str) -> pathlib.Path:
        """TFDS downloads `url` and checks it against `checksums.tsv`; errors become `DownloadError`."""
        check_reachable(url)
        try:
            return pathlib.Path(dl_manager.download(url))
        except tfds.download.download_manager.NonMatchingChecksumError as e:
            raise DownloadError(f"download of {url} does not match the size and sha256 in checksums.tsv "
                                "(corrupted or changed upstream); nothing was kept") from e
        except Exception as e:  # noqa: BLE001 - requests/urllib3/OSError mid-stream: an interrupted download
            raise DownloadError(f"download of {url} was interrupted ({type(e).__name__}: {e}); nothing "
                                "was kept: run the command again, or download it by hand into the "
                                "manual directory") from e

    def _split_generators(self, dl_manager):
        cfg = self.builder_config
        source, inv = self._locate(dl_manager)
        counts = ", ".join(f"{inv.found(s)} of {inv.expected[s]} {s}" for s in sources.SPLITS)
        if not inv.complete and not cfg.partial:
            missing = sum(inv.missing(s) for s in sources.SPLITS)
            example = f" (e.g. {', '.join(inv.missing_examples)})" if inv.missing_examples else ""
            raise IncompleteDataError(
                f"{cfg.variant}: the copy at {source.location} ({source.title}) is incomplete: found "
                f"{counts} shapes, {missing} missing{example}. Complete it, or use only what is there: "
                "python -m pipelines.prepare with --allow-partial, python -m pipelines.train with "
                "--set data.allow_partial=true.")
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
