"""Command line for the spectral tools (seed 001).

  python -m setnet.spectral graph --group C8 --activation relu --json
  python -m setnet.spectral graph --group C8 --activation abs --png c8_abs.png
  python -m setnet.spectral decompose --group D6
  python -m setnet.spectral pl-maps --group C8
  python -m setnet.spectral spectrum --run runs/setnet-default/<run> --out spec
  python -m setnet.spectral spectrum --model model.keras --dataset synthetic_shapes/small --out spec

`graph` measures the interaction graph of a pointwise activation (nodes are
the frequencies 0 .. n/2 for C<n>, component indices for other groups) and
compares it with the rule derived in docs/spectral.md; `--predicted` prints
the rule's graph instead. `pl-maps` shows the kernel condition for PL maps
between simple representations: the best equivariance defect of a PL map
V_i -> V_j (0: an exact map exists) next to ker V_i ⊆ ker V_j. `spectrum`
reads a trained set classifier (a training run folder, or a saved .keras
file) layer by layer (trivial vs standard energy of S_n on the real points of
each set) and writes a table, JSON and a PNG.
"""

from __future__ import annotations

import argparse
import json
import sys

from setnet.spectral.interaction import (
    ACTIVATIONS, DEFAULT_TOL, cyclic_rule, kernel_rule, measure_graph, pl_map_fit, render_png,
)
from setnet.spectral.isotypic import decompose


def _predicted(decomp, activation):
    if decomp.method == "cyclic-fourier":
        return cyclic_rule(decomp.degree, activation)
    return kernel_rule(decomp, activation)


def _graph(args) -> int:
    decomp = decompose(args.group)
    measured = measure_graph(decomp, args.activation, samples=args.samples, tol=args.tol, seed=args.seed)
    predicted = _predicted(decomp, args.activation)
    graph = predicted if args.predicted else measured
    if args.png:
        render_png(graph, args.png)
    if args.json:
        print(json.dumps(graph.to_json()))
        return 0
    print(f"{decomp.group.name}, {args.activation}: {len(graph.edges)} edges ({graph.source})")
    for i in range(len(decomp)):
        targets = [decomp.components[j].label for a, j in graph.edges if a == i]
        print(f"  {decomp.components[i].label:>10} -> {', '.join(targets) or '(none)'}")
    on, off = measured.gap()
    print(f"measured with tolerance {args.tol:g} on the energy fraction: smallest edge {on:.2e}, "
          f"largest non-edge {off:.2e}")
    same = measured.edges == predicted.edges
    print(f"measured {'==' if same else '!='} predicted ({predicted.source})")
    if args.png:
        print(f"wrote {args.png}")
    return 0


def _decompose(args) -> int:
    decomp = decompose(args.group)
    print(f"{decomp.group.name} on {decomp.degree} points: {len(decomp)} isotypic components ({decomp.method})")
    print(decomp.table())
    return 0


def _pl_maps(args) -> int:
    decomp = decompose(args.group)
    labels = [c.label for c in decomp.components]
    print(f"{decomp.group.name}: best relative equivariance defect of a PL map V_i -> V_j "
          f"(0 = exact map; * = kernel condition fails, lower bound 2|ker V_i|/|G| in brackets)")
    width = max(12, *(len(s) + 2 for s in labels))
    print(" " * width + "".join(f"{s:>{width}}" for s in labels))
    for i, src in enumerate(labels):
        cells = []
        for j in range(len(labels)):
            fit = pl_map_fit(decomp, i, j, seed=args.seed)
            cell = f"{fit.defect:.1e}" if fit.kernel_condition else f"*{fit.defect:.2f}[{fit.bound:.2f}]"
            cells.append(f"{cell:>{width}}")
        print(f"{src:>{width}}" + "".join(cells))
    return 0


def _load_run(run_dir):
    """The classifier of a training run folder (config.yaml + latest checkpoint) and its data section."""
    import pathlib

    import tensorflow as tf

    from pipelines.config import load_config
    from pipelines.input import dataset_info
    from setnet.models import build_classifier

    run_dir = pathlib.Path(run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise ValueError(f"{run_dir} is not a training run folder (no config.yaml); give the folder that "
                         "`make train` printed as 'run folder', e.g. runs/<experiment>/<run name>")
    cfg = load_config(run_dir / "config.yaml")
    latest = tf.train.latest_checkpoint(str(run_dir / "checkpoints"))
    if latest is None:
        raise ValueError(f"{run_dir} has no checkpoint yet (checkpoints/ is empty); train at least one epoch")
    data = cfg["data"]
    info = dataset_info(data["name"], data_dir=data["data_dir"], manual_dir=data["manual_dir"],
                        allow_partial=data["allow_partial"])
    model = build_classifier(cfg["model"], num_classes=info["num_classes"])
    # The checkpoint also holds the optimizer and the epoch counter; only the weights are needed here.
    tf.train.Checkpoint(model=model).restore(latest).expect_partial().assert_existing_objects_matched()
    return model, data, f"{run_dir.name} ({pathlib.Path(latest).name})"


def _spectrum(args) -> int:
    import pathlib

    import keras

    import setnet.layers  # noqa: F401  (registers the layers for loading)
    from pipelines.input import make_dataset
    from setnet.spectral.spectrum import network_spectrum, spectrum_table, write_spectrum_artifacts

    if (args.model is None) == (args.run is None):
        raise ValueError("give exactly one of --model (a .keras file) and --run (a training run folder)")
    data = {}
    if args.run is not None:
        model, data, name = _load_run(args.run)
    else:
        if not pathlib.Path(args.model).exists():
            raise ValueError(f"no model file at {args.model}; give a .keras file, or --run with a training run folder")
        model, name = keras.saving.load_model(args.model), pathlib.Path(args.model).name
    # Unset options come from the run's config (when there is one), else the defaults below.
    dataset = args.dataset or data.get("name", "synthetic_shapes")
    split = args.split or data.get("test_split", "test")
    num_points = args.num_points or data.get("num_points", 1024)
    batch_size = args.batch_size or data.get("batch_size", 32)
    data_dir = args.data_dir or data.get("data_dir")
    ds = make_dataset(dataset, split, num_points=num_points, batch_size=batch_size, data_dir=data_dir,
                      manual_dir=data.get("manual_dir"), allow_partial=data.get("allow_partial", False))
    rows = network_spectrum(model, ds, args.group, max_batches=args.max_batches)
    print(spectrum_table(rows))
    if args.out:
        for path in write_spectrum_artifacts(rows, args.out, f"{name} on {dataset} {split}"):
            print(f"wrote {path}")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m setnet.spectral", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    g = sub.add_parser("graph", help="interaction graph of a pointwise activation")
    g.add_argument("--group", required=True, help="C<n> (or any spec of setnet.symmetry, e.g. D6, C4*C4)")
    g.add_argument("--activation", default="relu", help=", ".join(ACTIVATIONS))
    g.add_argument("--json", action="store_true", help='print {"group", "activation", "edges"} as JSON')
    g.add_argument("--png", help="draw the graph to this PNG file")
    g.add_argument("--predicted", action="store_true", help="output the predicted graph instead of the measured one")
    g.add_argument("--tol", type=float, default=DEFAULT_TOL, help="energy fraction that makes an edge")
    g.add_argument("--samples", type=int, default=24, help="random signals per component")
    g.add_argument("--seed", type=int, default=0)
    d = sub.add_parser("decompose", help="isotypic components of R^X")
    d.add_argument("--group", required=True)
    p = sub.add_parser("pl-maps", help="the kernel condition for PL maps between simple representations")
    p.add_argument("--group", required=True)
    p.add_argument("--seed", type=int, default=0)
    sp = sub.add_parser("spectrum", help="energy per isotypic component, layer by layer, of a saved model")
    sp.add_argument("--model", help="a .keras file (e.g. a saved setnet classifier)")
    sp.add_argument("--run", help="a training run folder (runs/<experiment>/<run>): its config and latest checkpoint")
    sp.add_argument("--dataset", help="dataset name for pipelines.input.make_dataset (default: the run's, "
                                      "else synthetic_shapes)")
    sp.add_argument("--split", help="split or slice (default: the run's test split, else test)")
    sp.add_argument("--group", default="S", help="S (permutations of each set's real points) or a fixed group spec")
    sp.add_argument("--num-points", type=int, help="points per set (default: the run's, else 1024)")
    sp.add_argument("--batch-size", type=int, help="default: the run's, else 32")
    sp.add_argument("--max-batches", type=int, default=16)
    sp.add_argument("--data-dir", default=None, help="TFDS data directory (default: the run's)")
    sp.add_argument("--out", help="folder for spectrum.md, spectrum.json and spectrum.png")
    args = parser.parse_args(argv)
    if args.command == "graph":
        if args.activation not in ACTIVATIONS:
            print(f"error: unknown activation {args.activation!r}; expected one of {', '.join(ACTIVATIONS)}",
                  file=sys.stderr)
            return 2
        if not (0 < args.tol < 1) or args.samples < 1:
            print("error: --tol must lie in (0, 1) and --samples be at least 1", file=sys.stderr)
            return 2
    try:
        return {"graph": _graph, "decompose": _decompose, "pl-maps": _pl_maps,
                "spectrum": _spectrum}[args.command](args)
    except (ValueError, RuntimeError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
