"""Fail-fast, verified downloads of the ModelNet archives listed in `checksums.tsv`.

TFDS's download manager retries for minutes against a host that refuses connections (the PointNet
host has since ~2024); here a short connect timeout ends the attempt in seconds with instructions.
A download is streamed to `<name>.part`, checked against the size and sha256 in `checksums.tsv`, and
only then renamed, so an interrupted or corrupted download leaves nothing behind.

Example:

    from pipelines.datasets.modelnet.download import Remote, fetch
    remote = Remote("http://127.0.0.1:9/x.zip", 10, "0" * 64, "x.zip")
    fetch(remote, "/tmp/downloads")   # raises DownloadError at once: connection refused
"""

from __future__ import annotations

import dataclasses
import hashlib
import pathlib
import socket
import urllib.error
import urllib.request

from pipelines.datasets import DownloadError

CONNECT_TIMEOUT_S = 10.0
CHUNK = 1 << 20


@dataclasses.dataclass(frozen=True)
class Remote:
    url: str
    size: int
    sha256: str
    filename: str


def read_checksums(path) -> list[Remote]:
    """The TFDS `checksums.tsv` format: url, size, sha256, filename (tab-separated; '#' comments)."""
    out = []
    for line in pathlib.Path(path).read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            url, size, sha, filename = line.split("\t")
            out.append(Remote(url, int(size), sha, filename))
    return out


def _sha256(path: pathlib.Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def fetch(remote: Remote, dest_dir, *, timeout: float = CONNECT_TIMEOUT_S, progress: bool = True) -> pathlib.Path:
    """Downloads `remote` into `dest_dir` (or reuses a verified copy); returns the file's path.

    Raises:
      DownloadError: cannot connect, interrupted, or size/sha256 mismatch. Nothing partial is kept.
    """
    dest_dir = pathlib.Path(dest_dir)
    target = dest_dir / remote.filename
    if target.exists() and target.stat().st_size == remote.size and _sha256(target) == remote.sha256:
        return target
    part = target.with_name(target.name + ".part")
    try:
        response = urllib.request.urlopen(remote.url, timeout=timeout)
    except (urllib.error.URLError, OSError, socket.timeout, ValueError) as e:
        reason = getattr(e, "reason", e)
        raise DownloadError(f"cannot download {remote.url}: {reason}") from e
    dest_dir.mkdir(parents=True, exist_ok=True)
    received = 0
    h = hashlib.sha256()
    try:
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=remote.size, unit="B", unit_scale=True, desc=f"Downloading {remote.filename}")
        with response, open(part, "wb") as out:
            for block in iter(lambda: response.read(CHUNK), b""):
                out.write(block)
                h.update(block)
                received += len(block)
                if bar:
                    bar.update(len(block))
        if bar:
            bar.close()
        if received != remote.size:
            raise DownloadError(f"download of {remote.url} ended after {received:,} of {remote.size:,} "
                                "bytes (interrupted); nothing was kept: run the command again, or "
                                f"download it by hand into the manual directory")
        if h.hexdigest() != remote.sha256:
            raise DownloadError(f"download of {remote.url} has sha256 {h.hexdigest()}, expected "
                                f"{remote.sha256} (corrupted or changed upstream); nothing was kept")
        part.rename(target)
        return target
    except DownloadError:
        raise
    except Exception as e:  # noqa: BLE001 - any failure mid-stream is an interrupted download
        raise DownloadError(f"download of {remote.url} was interrupted after {received:,} of "
                            f"{remote.size:,} bytes ({e!r}); nothing was kept: run the command again, "
                            "or download it by hand into the manual directory") from e
    finally:
        part.unlink(missing_ok=True)
