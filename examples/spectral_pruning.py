"""A worked example: a C_n-equivariant network on periodic signals, its spectrum, and pruning.

It tests a consequence drawn by Gibson, Tubbenhauer & Williamson, "Equivariant neural networks and
piecewise linear representation theory" (arXiv:2408.00949); docs/spectral.md has the results.

    python -m examples.spectral_pruning --out runs/spectral-example     (make spectral-example)

Task. A signal x on C_16 (periodic, 16 samples) has random Fourier
coefficients at every frequency, each real dimension with the same expected
energy, so 9/16 of the input energy sits at frequencies k >= 4. The
label is which of the frequencies 1, 2, 3 has the largest amplitude: a
C_16-invariant function of the low-frequency part only.

Network. ``depth`` blocks of ``TiedEquivariantDense(colors(cyclic(16)))``
(circulant in every channel pair) and ReLU, then the mean over the 16 points
and a dense head.

Questions. (1) Where is each layer's energy, frequency by frequency? (2)
The paper: "if one wants to learn a low-frequency function, one can ignore
most of the network corresponding to high frequencies". After training, drop
the high-frequency components of every hidden layer (``IsotypicFilter`` after
each ReLU) and measure the accuracy; controls drop the low ones instead, or
prune by the paper's own order of frequencies; and a network that never
carries the high frequencies is trained from scratch.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import time

import numpy as np


def make_signals(num: int, n: int = 16, low=(1, 2, 3), seed: int = 0):
    """Random periodic signals (num, n, 1) and labels: the index in ``low`` of the strongest frequency.

    Every real dimension of R^n carries the same expected energy (flat spectrum).
    """
    rng = np.random.default_rng(seed)
    half = n // 2 + 1
    coeff = (rng.normal(size=(num, half)) + 1j * rng.normal(size=(num, half))) / np.sqrt(2)
    coeff[:, 0] = rng.normal(size=num)  # real, and one dimension: as much energy as each half of a pair
    if n % 2 == 0:
        coeff[:, -1] = rng.normal(size=num)
    x = np.fft.irfft(coeff, n=n, axis=1) * n
    x /= np.sqrt(n)  # unit variance per sample point
    y = np.argmax(np.abs(coeff[:, list(low)]), axis=1)
    return x[:, :, None].astype("float32"), y.astype("int64")


def build_network(n: int = 16, channels: int = 16, depth: int = 3, classes: int = 3, keep=None):
    """The C_n network; ``keep[l]`` (a list of component names, or None) filters the l-th hidden layer."""
    import keras

    from setnet.layers import TiedEquivariantDense
    from setnet.spectral.isotypic_filter import IsotypicFilter
    from setnet.symmetry import colors, cyclic

    keep = keep or [None] * depth
    c = colors(cyclic(n))
    inputs = keras.Input((n, 1), name="signal")
    h = inputs
    for layer in range(depth):
        h = TiedEquivariantDense(channels, colors=c, name=f"conv{layer + 1}")(h)
        h = keras.layers.Activation("relu", name=f"relu{layer + 1}")(h)
        if keep[layer] is not None:
            h = IsotypicFilter(f"C{n}", keep[layer], name=f"filter{layer + 1}")(h)
    h = keras.layers.GlobalAveragePooling1D(name="pool")(h)
    return keras.Model(inputs, keras.layers.Dense(classes, name="logits")(h), name=f"c{n}_net")


def pruned_copy(model, n, channels, depth, keep):
    """The trained model with filters inserted (weights shared by copying, layer by layer)."""
    pruned = build_network(n, channels, depth, keep=keep)
    for layer in pruned.layers:
        if layer.weights:
            layer.set_weights(model.get_layer(layer.name).get_weights())
    return pruned


def accuracy(model, x, y) -> float:
    # Eager calls: predict() would trace a new function for every pruned copy.
    logits = np.concatenate([np.asarray(model(x[i:i + 1024], training=False)) for i in range(0, len(x), 1024)])
    return float((np.argmax(logits, axis=1) == y).mean())


def train(model, x, y, epochs, seed, verbose):
    import keras

    keras.utils.set_random_seed(seed)
    model.compile(optimizer=keras.optimizers.Adam(3e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    model.fit(x, y, epochs=epochs, batch_size=128, verbose=2 if verbose else 0)
    return model


def frequencies(n):
    return [f"k{k}" for k in range(n // 2 + 1)]


def pruning_plans(n, depth, low_max):
    """name -> per-layer keep lists. 'high' means k > low_max, as in signal processing; 'paper' uses
    the order of Gibson, Tubbenhauer & Williamson, where a component is higher the smaller
    |G/ker| = n / gcd(n, k) is."""
    ks = range(n // 2 + 1)
    every = lambda keep: [keep] * depth  # noqa: E731
    plans = {f"keep k<={cut} (all layers)": every([f"k{k}" for k in ks if k <= cut]) for cut in range(n // 2)}
    low = [f"k{k}" for k in ks if k <= low_max]
    for layer in range(depth):
        plans[f"keep k<={low_max} (layer {layer + 1} only)"] = [low if i == layer else None for i in range(depth)]
    plans[f"drop k=1..{low_max} (control)"] = every([f"k{k}" for k in ks if not 1 <= k <= low_max])
    small_image = [k for k in ks if k and n // np.gcd(n, k) <= 4]
    plans[f"drop k in {small_image}: |G/ker|<=4, not trivial (paper order)"] = every(
        [f"k{k}" for k in ks if k not in small_image])
    plans["drop k=0 in hidden layers before the last (paper's highest)"] = (
        [[f"k{k}" for k in ks if k] for _ in range(depth - 1)] + [None])
    return plans


def mixed_input_check(n=16):
    """Energy at k=1 of relu(cos(2πt/n) + b cos(2π·4t/n) + c): does it depend on b and c?"""
    from setnet.spectral.isotypic import cyclic_fourier

    d = cyclic_fourier(n)
    t = np.arange(n)
    rows = []
    for b, c in [(0, 0), (0.3, 0), (0.7, 0), (0, 0.3), (0, -0.3)]:
        x = np.cos(2 * np.pi * t / n) + b * np.cos(2 * np.pi * 4 * t / n) + c
        rows.append({"b": b, "c": c, "energy_k1": float(d.energy(np.maximum(x, 0))[1])})
    return rows


def run(out: pathlib.Path, n=16, channels=16, depth=3, train_size=16000, test_size=5000, epochs=30, seeds=(0, 1, 2),
        low=(1, 2, 3), verbose=True) -> dict:
    import keras

    from setnet.spectral.interaction import measure_graph, render_png
    from setnet.spectral.spectrum import network_spectrum, plot_spectrum, spectrum_table

    out.mkdir(parents=True, exist_ok=True)
    low_max = max(low)
    plans = pruning_plans(n, depth, low_max)
    x_test, y_test = make_signals(test_size, n, low, seed=10_000)
    results = {"config": {"n": n, "channels": channels, "depth": depth, "train_size": train_size,
                          "test_size": test_size, "epochs": epochs, "seeds": list(seeds), "low": list(low)},
               "runs": []}
    for seed in seeds:
        t0 = time.time()
        x, y = make_signals(train_size, n, low, seed=seed)
        keras.utils.set_random_seed(seed)
        model = train(build_network(n, channels, depth), x, y, epochs, seed, verbose)
        run_result = {"seed": seed, "accuracy": accuracy(model, x_test, y_test), "pruned": {}}
        for name, keep in plans.items():
            run_result["pruned"][name] = accuracy(pruned_copy(model, n, channels, depth, keep), x_test, y_test)
        spectrum = network_spectrum(model, x_test, f"C{n}", progress=False)
        run_result["spectrum"] = [{"layer": r["layer"], "fraction": r["fraction"]} for r in spectrum]
        keras.utils.set_random_seed(seed)
        lowpass = train(build_network(n, channels, depth, keep=[[f"k{k}" for k in range(low_max + 1)]] * depth),
                        x, y, epochs, seed, verbose)
        run_result["retrained_lowpass"] = accuracy(lowpass, x_test, y_test)
        run_result["seconds"] = time.time() - t0
        results["runs"].append(run_result)
        if seed == seeds[0]:
            (out / "spectrum.md").write_text(spectrum_table(spectrum) + "\n")
            plot_spectrum(spectrum, out / "spectrum.png", f"C{n} network, test set: energy per frequency")
        print(f"seed {seed}: accuracy {run_result['accuracy']:.4f}, low-pass retrained "
              f"{run_result['retrained_lowpass']:.4f} ({run_result['seconds']:.0f} s)", flush=True)
    results["mixed_input_check"] = mixed_input_check(n)
    render_png(measure_graph(f"C{n}", "relu"), out / f"c{n}_relu_graph.png")
    (out / "results.json").write_text(json.dumps(results, indent=1))
    report = format_report(results)
    (out / "report.md").write_text(report + "\n")
    print(report)
    return results


def _mean_std(values):
    values = np.asarray(values, dtype=float)
    return f"{values.mean():.4f} ± {values.std():.4f}" if len(values) > 1 else f"{values[0]:.4f}"


def format_report(results) -> str:
    runs = results["runs"]
    cfg = results["config"]
    n = cfg["n"]
    lines = [f"C{n} network: {cfg['depth']} x (TiedEquivariantDense({cfg['channels']}) + ReLU), mean, dense; "
             f"{cfg['train_size']} training / {cfg['test_size']} test signals, {cfg['epochs']} epochs, "
             f"seeds {cfg['seeds']}; label = argmax of the amplitudes at k = {cfg['low']}.", ""]
    base = [r["accuracy"] for r in runs]
    lines += ["| network | test accuracy | change |", "|---|---:|---:|",
              f"| trained, unpruned | {_mean_std(base)} | |"]
    for name in runs[0]["pruned"]:
        acc = [r["pruned"][name] for r in runs]
        lines.append(f"| {name} | {_mean_std(acc)} | {np.mean(acc) - np.mean(base):+.4f} |")
    retrained = [r["retrained_lowpass"] for r in runs]
    lines.append(f"| retrained from scratch keeping k<={max(cfg['low'])} in every hidden layer | "
                 f"{_mean_std(retrained)} | {np.mean(retrained) - np.mean(base):+.4f} |")
    names = frequencies(n)
    lines += ["", "Energy per frequency, % of each layer's energy on the test set (mean over seeds):", "",
              "| layer | " + " | ".join(f"k={k}" for k in range(len(names))) + f" | k>{max(cfg['low'])} |",
              "|---|" + "---:|" * (len(names) + 1)]
    for i, row in enumerate(runs[0]["spectrum"]):
        frac = np.mean([[r["spectrum"][i]["fraction"][k] for k in names] for r in runs], axis=0)
        high = frac[max(cfg["low"]) + 1:].sum()
        lines.append(f"| {row['layer']} | " + " | ".join(f"{100 * f:.2f}" for f in frac) + f" | {100 * high:.1f} |")
    lines += ["", "Mixed inputs: energy at k=1 of relu(cos(2πt/16) + b·cos(2π·4t/16) + c):", "",
              "| b | c | energy at k=1 |", "|---:|---:|---:|"]
    lines += [f"| {r['b']} | {r['c']} | {r['energy_k1']:.4f} |" for r in results["mixed_input_check"]]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m examples.spectral_pruning", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="runs/spectral-example", help="folder for results, tables and PNGs")
    parser.add_argument("--n", type=int, default=16, help="points per periodic signal (the group is C_n)")
    parser.add_argument("--channels", type=int, default=16)
    parser.add_argument("--depth", type=int, default=3)
    parser.add_argument("--train-size", type=int, default=16000)
    parser.add_argument("--test-size", type=int, default=5000)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    if args.n < 8 or args.depth < 1 or args.channels < 1 or args.epochs < 1 or args.train_size < 10:
        print("error: need --n >= 8 (the label uses frequencies 1..3 and pruning needs higher ones), "
              "--depth, --channels, --epochs >= 1 and --train-size >= 10", file=sys.stderr)
        return 2
    run(pathlib.Path(args.out), n=args.n, channels=args.channels, depth=args.depth, train_size=args.train_size,
        test_size=args.test_size, epochs=args.epochs, seeds=tuple(args.seeds), verbose=not args.quiet)
    return 0


if __name__ == "__main__":
    sys.exit(main())
