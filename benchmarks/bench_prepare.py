"""Preparing the user's own Parquet tables (`set_table`): sets/s and peak memory per table size.

For each size (default 10^5 and 10^6 points) a long Parquet table (set id, class, x, y, z; sets of
50..150 points, rows of sets interleaved and cut into 4 shards, so sets span shards) is written into
a temporary folder, then prepared by `set_table`'s builder in a child process, one per size. The
child first prepares a tiny table (so that imports and TensorFlow's and TFDS's lazy set-up are
done), then the table, and reports that prepare's wall time and its peak resident memory (`VmHWM` in
/proc/self/status), also above its peak after the tiny one, which is what the data costs. Goal: that last column flat in the table's size (the table is streamed in batches and spilled
into buckets, never read whole). `--beam` prepares on Apache Beam's DirectRunner instead.

Example:

    python -m benchmarks.bench_prepare                     # 10^5 and 10^6 points
    python -m benchmarks.bench_prepare --sizes 20000 --beam
"""

from __future__ import annotations

import argparse
import json
import pathlib
import subprocess
import sys
import tempfile
import time

import numpy as np

CLASSES = ("a", "b", "c", "d")
SHARDS = 4


def write_table(folder: pathlib.Path, points: int, seed: int = 0) -> tuple[pathlib.Path, int]:
    """A sharded Parquet table of about `points` rows, written a piece at a time. Returns (folder, sets)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    sizes = []
    while sum(sizes) < points:
        sizes.append(int(rng.integers(50, 151)))
    sizes[-1] -= sum(sizes) - points
    if sizes[-1] <= 0:
        sizes.pop()
    sid = np.repeat(np.arange(len(sizes)), sizes)
    # Interleave the sets' rows locally (within windows of ~4 sets) and cut into shards: sets span
    # batches and shards, as in a table appended to by several writers.
    key = sid + rng.uniform(0, 4, size=len(sid))
    sid = sid[np.argsort(key, kind="stable")]
    folder.mkdir(parents=True, exist_ok=True)
    cuts = np.linspace(0, len(sid), SHARDS + 1).astype(int)
    for i, (lo, hi) in enumerate(zip(cuts[:-1], cuts[1:])):
        part = sid[lo:hi]
        table = pa.table({"sid": pa.array([f"s{v:07d}" for v in part]),
                          "label": pa.array([CLASSES[v % len(CLASSES)] for v in part]),
                          **{c: rng.normal(size=len(part)) for c in ("x", "y", "z")}})
        pq.write_table(table, folder / f"part-{i:05d}.parquet", row_group_size=100_000)
    return folder, len(sizes)


def _peak_rss_mb() -> float:
    for line in pathlib.Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _reset_peak() -> None:
    # Linux: writing 5 to clear_refs resets VmHWM to the current RSS.
    try:
        pathlib.Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def child(table: str, data_dir: str, beam: bool) -> dict:
    """Runs in the child: prepares a tiny table first (imports, TensorFlow's and TFDS's lazy set-up),
    then `table`; returns the second prepare's time and memory."""
    import tensorflow_datasets as tfds

    from pipelines.datasets.set_table.set_table_dataset_builder import Builder

    config = None
    if beam:
        from apache_beam.options.pipeline_options import PipelineOptions

        config = tfds.download.DownloadConfig(beam_options=PipelineOptions(["--runner=DirectRunner"]))
    warm, _ = write_table(pathlib.Path(data_dir) / "warm-up-table", 500, seed=1)
    Builder(data_dir=f"{data_dir}/warm-up", path=warm, set_column="sid",
            target_column="label").download_and_prepare(download_config=config)
    before = _peak_rss_mb()
    _reset_peak()
    start = time.perf_counter()
    builder = Builder(data_dir=data_dir, path=table, set_column="sid", target_column="label")
    builder.download_and_prepare(download_config=config)
    seconds = time.perf_counter() - start
    sets = sum(s.num_examples for s in builder.info.splits.values())
    return {"seconds": seconds, "sets": sets, "points": builder.info.metadata["num_points"],
            "peak_mb": _peak_rss_mb(), "imports_mb": before}


def measure(points: int, beam: bool, work: pathlib.Path) -> dict:
    """Writes the table for `points`, prepares it in a child process, returns the child's report."""
    table, _ = write_table(work / f"table-{points}", points)
    cmd = [sys.executable, "-m", "benchmarks.bench_prepare", "--child", str(table), str(work / f"tfds-{points}")]
    if beam:
        cmd.append("--beam")
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"error: the prepare of {points} points failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv=None) -> list:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000],
                        help="table sizes in points (default 100000 1000000)")
    parser.add_argument("--beam", action="store_true", help="prepare on Apache Beam's DirectRunner")
    parser.add_argument("--child", nargs=2, metavar=("TABLE", "DATA_DIR"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(*args.child, args.beam)))
        return []
    if any(s < 200 for s in args.sizes):
        parser.error("--sizes must be at least 200 points (one set has 50..150)")
    rows = []
    print(f"set_table prepare{' (Beam DirectRunner)' if args.beam else ''}: Parquet, {SHARDS} shards, "
          "sets of 50..150 points, F=3, 4 classes")
    print(f"{'points':>10}{'sets':>8}{'seconds':>9}{'sets/s':>9}{'points/s':>11}{'peak MB':>9}{'data MB':>9}")
    with tempfile.TemporaryDirectory(prefix="bench-prepare-") as tmp:
        for size in args.sizes:
            r = measure(size, args.beam, pathlib.Path(tmp))
            r["data_mb"] = r["peak_mb"] - r["imports_mb"]
            rows.append(r)
            print(f"{r['points']:>10}{r['sets']:>8}{r['seconds']:>9.1f}{r['sets'] / r['seconds']:>9.0f}"
                  f"{r['points'] / r['seconds']:>11.0f}{r['peak_mb']:>9.0f}{r['data_mb']:>9.0f}")
    if len(rows) > 1:
        small, large = rows[0], rows[-1]
        growth = large["data_mb"] - small["data_mb"]
        ratio = large["points"] / small["points"]
        print(f"peak memory above the warm-up: {small['data_mb']:.0f} MB -> {large['data_mb']:.0f} MB for "
              f"{ratio:.0f}x the points ({growth:+.0f} MB)")
    return rows


if __name__ == "__main__":
    main()
