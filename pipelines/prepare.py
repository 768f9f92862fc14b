"""Prepare a dataset: `python -m pipelines.prepare DATASET [--manual-dir DIR] [--data-dir DIR] [--allow-partial]`.

Writes the TFDS dataset (with TFDS's progress bars) and prints a summary: examples per split as plain
numbers, the expected count where the dataset has an official one, and the classes. For the user's
own sets (`set_folder --path DIR`, `set_table --path FILE --set-column C --target-column C ...`,
docs/own-data.md) also the set sizes (min / median / max), F, and the classes with their counts or
the targets' ranges. Exit status 0 on success, 2 when the data is missing (the message says how to
get it), bad (the message names the file and row or set) or the dataset name or an argument is
unknown.

Example:

    python -m pipelines.prepare digits --data-dir /tmp/tfds
    python -m pipelines.prepare modelnet40 --manual-dir ../shared/data/modelnet40-subset --allow-partial
    python -m pipelines.prepare set_table --path points.parquet --set-column sid --target-column y
"""

from __future__ import annotations

import argparse
import difflib
import logging
import sys

from pipelines import datasets


def _user_summary(builder, meta) -> list:
    """The lines about the user's own sets: sizes, F, classes with counts or target ranges."""
    lines = [f"source: {meta.get('source')} ({meta.get('source_format')})"]
    names = ", ".join(meta.get("feature_names", []))
    xyz = ", ".join(meta.get("xyz_columns", [])) or "none"
    lines.append(f"features per point (F): {meta.get('num_features')} ({names}); xyz: {xyz}")
    lines.append(f"{'split':<8}{'sets':>10}{'min':>8}{'median':>8}{'max':>8}  points per set")
    for split, sizes in sorted(meta.get("set_sizes", {}).items(), key=lambda kv: (kv[0] != "train", kv[0])):
        n = builder.info.splits[split].num_examples if split in builder.info.splits else 0
        lines.append(f"{split:<8}{n:>10}{sizes['min']:>8}{sizes['median']:>8g}{sizes['max']:>8}")
    if meta.get("subsampled"):
        lines.append(f"{meta['subsampled']} set(s) over max_points={meta.get('max_points')} were subsampled")
    if meta.get("task") == "regression":
        lines.append("task: regression; target range:")
        lines += [f"  {name}: {lo:g} .. {hi:g}" for name, (lo, hi) in meta.get("target_range", {}).items()]
    else:
        counts = meta.get("class_counts", {})
        classes = meta.get("class_names", [])
        splits = sorted(counts, key=lambda s: (s != "train", s))
        lines.append(f"task: classification, {len(classes)} classes; sets per class:")
        lines.append(f"  {'class':<20}" + "".join(f"{s:>10}" for s in splits))
        lines += [f"  {c:<20}" + "".join(f"{counts[s].get(c, 0):>10}" for s in splits) for c in classes]
    return lines


def summary(builder) -> str:
    """The text printed after preparing: location, source, examples per split, classes."""
    info = builder.info
    meta = dict(info.metadata or {})
    if info.name in datasets.USER_DATASETS:
        return "\n".join([f"{info.name}/{info.config_name} {info.version} prepared in {builder.data_dir}",
                          *_user_summary(builder, meta)])
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


def _beam_data_error(error):
    """The DataFormatError's one line inside an error a Beam runner raised, or None."""
    seen = error
    while seen is not None:
        if isinstance(seen, datasets.DataFormatError):
            return str(seen).splitlines()[0]
        seen = seen.__cause__ or seen.__context__
    text = str(error)
    marker = "DataFormatError: "
    if marker in text:
        return text.split(marker, 1)[1].splitlines()[0]
    return None


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
    own = parser.add_argument_group("the user's own sets (set_folder, set_table; docs/own-data.md)")
    own.add_argument("--path", help="set_folder: DIR/<class>/<set file>; set_table: a Parquet/CSV file or a "
                                    "folder of shards")
    own.add_argument("--set-column", help="set_table: the set-id column")
    own.add_argument("--target-column", nargs="+", help="set_table: the target column (several: a vector "
                                                         "regression target)")
    own.add_argument("--feature-columns", nargs="+", help="set_table: the feature columns (default: all others)")
    own.add_argument("--xyz-columns", nargs="+", help="the features that are coordinates (default: x y z)")
    own.add_argument("--split-column", help="set_table: a column naming each set's split")
    own.add_argument("--task", choices=("auto", "classification", "regression"),
                     help="set_table: default auto (float or several targets: regression)")
    own.add_argument("--max-points", type=int, help="the most points a set may have (default 100000)")
    own.add_argument("--on-too-many", choices=("subsample", "refuse"), help="a set over --max-points: "
                                                                           "subsample (default) or refuse")
    own.add_argument("--test-fraction", type=float, help="share of sets in test when the data names no "
                                                         "splits (default 0.2)")
    own.add_argument("--split-seed", type=int, help="seed of that split and of subsampling (default 0)")
    own.add_argument("--points-per-mesh", type=int, help="set_folder: points drawn on each mesh (default 2048)")
    own.add_argument("--beam-options", help="prepare with Apache Beam: pipeline options as TFDS's "
                                            "--beam_pipeline_options, e.g. runner=DirectRunner,direct_num_workers=2")
    args = parser.parse_args(argv)
    base = args.dataset.partition("/")[0]
    if base not in datasets.DATASETS:
        near = difflib.get_close_matches(base, datasets.DATASETS, n=2, cutoff=0.6)
        hint = f"; did you mean {' or '.join(map(repr, near))}?" if near else ""
        print(f"error: unknown dataset {args.dataset!r}{hint} (known: {', '.join(datasets.DATASETS)}, optionally "
              "with a builder config like synthetic_shapes/small)", file=sys.stderr)
        return 2
    params = {key: value for key, value in (
        ("path", args.path), ("set_column", args.set_column), ("target_column", args.target_column),
        ("feature_columns", args.feature_columns), ("xyz_columns", args.xyz_columns),
        ("split_column", args.split_column), ("task", args.task), ("max_points", args.max_points),
        ("on_too_many", args.on_too_many), ("test_fraction", args.test_fraction),
        ("split_seed", args.split_seed), ("points_per_mesh", args.points_per_mesh)) if value is not None}
    for_folder = {"path", "xyz_columns", "max_points", "on_too_many", "test_fraction", "split_seed",
                  "points_per_mesh"}
    allowed = (for_folder if base == "set_folder" else for_folder - {"points_per_mesh"} | {
        "set_column", "target_column", "feature_columns", "split_column", "task"}
        if base == "set_table" else set())
    if set(params) - allowed:
        flags = ", ".join("--" + k.replace("_", "-") for k in sorted(set(params) - allowed))
        print(f"error: {flags} do(es) not apply to {base}"
              + (f"; they are for {' and '.join(datasets.USER_DATASETS)}" if not allowed else ""), file=sys.stderr)
        return 2
    if base in datasets.USER_DATASETS and not args.path:
        print(f"error: {base} needs --path (docs/own-data.md)", file=sys.stderr)
        return 2
    beam_options = None
    if args.beam_options and base != "set_table":
        print(f"error: --beam-options: {base} prepares on one machine; Beam is for set_table (a table of points "
              "can be larger than one machine; docs/own-data.md)", file=sys.stderr)
        return 2
    if args.beam_options:
        beam_options = [f"--{o.strip()}" for o in args.beam_options.split(",") if o.strip()]
        # A failing Beam worker logs its whole traceback; the one line below says what is wrong, and
        # any other error is raised with its traceback anyway.
        logging.getLogger("apache_beam").setLevel(logging.CRITICAL)
    try:
        builder = datasets.prepare(args.dataset, data_dir=args.data_dir, manual_dir=args.manual_dir,
                                   allow_partial=args.allow_partial, force=args.force, source=args.source,
                                   params=params or None, beam_options=beam_options)
    except datasets.DataNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except (datasets.DataFormatError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except Exception as e:  # noqa: BLE001 - a Beam worker's DataFormatError comes back wrapped
        bad = _beam_data_error(e)
        if bad is None:
            raise
        print(f"error: {bad}", file=sys.stderr)
        return 2
    print(summary(builder))
    return 0


if __name__ == "__main__":
    sys.exit(main())
