"""Prepare a dataset: `python -m pipelines.prepare DATASET [--manual-dir DIR] [--data-dir DIR] [--allow-partial]`.

Writes the TFDS dataset (with TFDS's progress bars) and prints a summary: examples per split as plain
numbers, the expected count where the dataset has an official one, and the classes. Exit status 0 on
success, 2 when the data is missing (the message says how to get it) or the dataset name is
unknown, 1 for a corrupt file.

Example:

    python -m pipelines.prepare digits --data-dir /tmp/tfds
    python -m pipelines.prepare modelnet40 --manual-dir ../shared/data/modelnet40-subset --allow-partial
"""

from __future__ import annotations

import argparse
import difflib
import sys

from pipelines import datasets


def summary(builder) -> str:
    """The text printed after preparing: location, source, examples per split, classes."""
    info = builder.info
    meta = dict(info.metadata or {})
    names = list(info.features["label"].names)
    lines = [f"{info.name}/{info.config_name} {info.version} prepared in {builder.data_dir}"]
    if "source_title" in meta:
        lines.append(f"source: {meta['source_title']} at {meta.get('source_location', '?')}")
        if meta.get("partial"):
            lines.append("PARTIAL copy: only the shapes found were prepared")
    expected = meta.get("expected", {})
    splits = sorted(set(info.splits.keys()) | set(expected), key=lambda s: (s != "train", s))
    header = f"{'split':<8}{'examples':>10}" + (f"{'expected':>10}" if expected else "")
    lines.append(header)
    for split in splits:
        n = info.splits[split].num_examples if split in info.splits else 0
        lines.append(f"{split:<8}{n:>10}" + (f"{expected.get(split, ''):>10}" if expected else ""))
    lines.append(f"classes ({len(names)}): {', '.join(names)}")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipelines.prepare",
                                     description="Prepare a setnet dataset in TFDS format.")
    parser.add_argument("dataset", help=f"one of {', '.join(datasets.DATASETS)}, optionally with a "
                                        "config: synthetic_shapes/small")
    parser.add_argument("--manual-dir", help="ModelNet: where the published files are "
                                             f"(default $SETNET_MODELNET_DIR or {datasets.default_manual_dir()})")
    parser.add_argument("--data-dir", help=f"TFDS data dir (default $TFDS_DATA_DIR or {datasets.default_data_dir()})")
    parser.add_argument("--allow-partial", action="store_true",
                        help="ModelNet: prepare an incomplete copy instead of refusing it")
    parser.add_argument("--source", default="auto", choices=("auto", "text", "hdf5", "off"),
                        help="ModelNet: which published form to read when several are present")
    parser.add_argument("--force", action="store_true", help="regenerate even if already prepared")
    args = parser.parse_args(argv)
    base = args.dataset.partition("/")[0]
    if base not in datasets.DATASETS:
        near = difflib.get_close_matches(base, datasets.DATASETS, n=2, cutoff=0.6)
        hint = f"; did you mean {' or '.join(map(repr, near))}?" if near else ""
        print(f"error: unknown dataset {args.dataset!r}{hint} (known: {', '.join(datasets.DATASETS)}, optionally "
              "with a builder config like synthetic_shapes/small)", file=sys.stderr)
        return 2
    try:
        builder = datasets.prepare(args.dataset, data_dir=args.data_dir, manual_dir=args.manual_dir,
                                   allow_partial=args.allow_partial, force=args.force, source=args.source)
    except datasets.DataNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except (datasets.DataFormatError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(summary(builder))
    return 0


if __name__ == "__main__":
    sys.exit(main())
