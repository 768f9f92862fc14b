"""`make bench-teleport`: training with and without symmetry teleportation, same configs and seeds.

A study of the method of Zhao, Dehmamy, Walters & Yu, "Symmetry Teleportation for Accelerated
Optimization", NeurIPS 2022 (arXiv:2205.10637), on a set classifier (docs/teleport.md has the results).

For each optimizer setting (SGD at a conservative and at a well-tuned step size, AdaGrad, Adam) and
seed, one set classifier (PermEquivariantLinear blocks with LeakyReLU and one linear block, masked
mean pooling, a Dense head; no normalisation layers, so that every layer pair has an exact symmetry:
positive scaling across LeakyReLU, GL(h) across the linear block) is trained on the digits point
sets twice from the same initial weights and the same batch order: once plain, once with
`teleport` at the start of the scheduled epochs (time included). Measured per run: full training-set
loss after every epoch, against epochs and against wall time of training (evaluation excluded),
epochs and seconds to reach a target loss, final validation accuracy, and the time spent teleporting.

The target loss of an optimizer is the highest final training loss among its plain runs, so every
plain run reaches it, at the latest in its last epoch; a teleported run that never reaches it counts
as not reaching it (shown as "—"). Tracing (one-off graph compilation of the training step and of
the teleport objective) is done in a warm-up before any timed run and reported separately.

Outputs (``--out``, default ``runs/teleport``): ``results.json``, ``curves.png`` (loss against
epochs and against seconds, per optimizer; thin lines are seeds, thick lines their mean), and one
MLflow parent run with a child run per training run (tracking URI: ``$MLFLOW_TRACKING_URI``, else
``sqlite:///runs/mlflow.db``).

    python -m examples.teleport_study [--epochs 16] [--seeds 0 1 2] [--optimizers sgd adagrad adam]
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys
import time

import numpy as np

DEFAULTS = {
    "dataset": "digits",
    "num_points": 48,
    "batch_size": 32,
    "epochs": 16,
    "seeds": [0, 1, 2],
    # (units, activation) per PermEquivariantLinear block, then masked pooling and a Dense head.
    "model": {
        "num_classes": 10,
        "blocks": [[32, "leaky_relu"], [32, "linear"], [64, "leaky_relu"]],
        "pooling": "mean",
        "global_pool": "mean",
        "head": [[64, "leaky_relu"]],
    },
    # name -> Keras optimizer kind and arguments. "sgd" is deliberately conservative (stable for
    # every seed, slow); "sgd-tuned" is the best of {0.01, 0.05, 0.2} in a pilot on seed 0.
    "optimizers": {
        "sgd": {"kind": "sgd", "learning_rate": 0.01},
        "sgd-tuned": {"kind": "sgd", "learning_rate": 0.05},
        "adagrad": {"kind": "adagrad", "learning_rate": 0.02},
        "adam": {"kind": "adam", "learning_rate": 0.002},
    },
    # One teleport before the first epoch: 8 ascent steps on 64 examples, gradient norm grown at
    # most 8-fold (unbounded growth makes the next SGD steps diverge; see docs/teleport.md).
    "teleport": {
        "group": "auto",
        "epochs": [0],
        "ascent_steps": 8,
        "learning_rate": 0.5,
        "batch": 64,
        "max_grad_norm": None,
        "max_grad_growth": 8.0,
        "optimizer_state": "transform",
    },
}


def _tracking_uri():
    return os.environ.get("MLFLOW_TRACKING_URI") or "sqlite:///runs/mlflow.db"


def load_data(cfg):
    """The whole train and test splits as in-memory arrays (points, mask, labels)."""
    from pipelines.input import dataset_info, make_dataset

    info = dataset_info(cfg["dataset"])
    out = {}
    for split, key in (("train", "train"), ("test", "val")):
        ds = make_dataset(cfg["dataset"], split, num_points=cfg["num_points"], batch_size=info["splits"][split],
                          training=False)
        (features, labels), = ds.take(1)
        out[key] = (features["points"].numpy(), features["mask"].numpy(), labels.numpy())
    return out


def build_model(spec):
    """The experiment's set classifier, straight from setnet.layers (no normalisation layers)."""
    import keras

    from setnet.layers import MaskedGlobalPooling, PermEquivariantLinear

    points = keras.Input((None, 3), name="points")
    mask = keras.Input((None,), dtype="bool", name="mask")
    x = points
    for i, (units, activation) in enumerate(spec["blocks"]):
        x = PermEquivariantLinear(units, pooling=spec["pooling"], activation=activation, name=f"block{i}")(x, mask=mask)
    h = MaskedGlobalPooling(spec["global_pool"], name="pool")(x, mask=mask)
    for j, (units, activation) in enumerate(spec["head"]):
        h = keras.layers.Dense(units, activation=activation, name=f"head{j}")(h)
    logits = keras.layers.Dense(spec["num_classes"], name="logits")(h)
    return keras.Model({"points": points, "mask": mask}, logits, name="teleport_bench")


class Bench:
    """One model and one optimizer per kind, traced once; runs reset them to a seed's initial state."""

    def __init__(self, cfg, data):
        import keras
        import tensorflow as tf

        from setnet.teleport import find_symmetries

        self.cfg, self.data, self.tf = cfg, data, tf
        self.model = build_model(cfg["model"])
        self.symmetries = find_symmetries(self.model)
        self.loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        self.initial = {}
        for seed in cfg["seeds"]:
            keras.utils.set_random_seed(seed)
            fresh = build_model(cfg["model"])
            self.initial[seed] = [v.numpy() for v in fresh.weights]
        self.optimizers, self.steps, self.optimizer_init = {}, {}, {}
        makers = {"sgd": keras.optimizers.SGD, "adagrad": keras.optimizers.Adagrad, "adam": keras.optimizers.Adam}
        for name, spec in cfg["optimizers"].items():
            kwargs = {k: v for k, v in spec.items() if k != "kind"}
            optimizer = makers[spec["kind"]](**kwargs)
            optimizer.build(self.model.trainable_variables)
            self.optimizers[name] = optimizer
            self.optimizer_init[name] = [v.numpy() for v in optimizer.variables]
            self.steps[name] = self._train_step(optimizer)
        self.evaluate = tf.function(lambda p, m: self.model({"points": p, "mask": m}, training=False))

    def _train_step(self, optimizer):
        tf, model, loss = self.tf, self.model, self.loss

        @tf.function
        def step(points, mask, labels):
            with tf.GradientTape() as tape:
                value = loss(labels, model({"points": points, "mask": mask}, training=True))
            optimizer.apply_gradients(zip(tape.gradient(value, model.trainable_variables), model.trainable_variables))
            return value

        return step

    def reset(self, seed, optimizer):
        for v, w in zip(self.model.weights, self.initial[seed]):
            v.assign(w)
        for v, w in zip(self.optimizers[optimizer].variables, self.optimizer_init[optimizer]):
            v.assign(w)

    def train_loss_and_accuracy(self, split):
        points, mask, labels = self.data[split]
        logits = self.evaluate(points, mask)
        return float(self.loss(labels, logits)), float(np.mean(np.argmax(logits, -1) == labels))

    def teleport_batch(self, seed, epoch):
        points, mask, labels = self.data["train"]
        idx = np.random.default_rng([seed, epoch, 7]).choice(len(labels), self.cfg["teleport"]["batch"], replace=False)
        return {"points": points[idx], "mask": mask[idx]}, labels[idx]

    def teleport(self, optimizer, seed, epoch):
        from setnet.teleport import teleport

        t = self.cfg["teleport"]
        x, y = self.teleport_batch(seed, epoch)
        return teleport(self.model, x, y, self.loss, steps=t["ascent_steps"], learning_rate=t["learning_rate"],
                        group=t["group"], max_grad_norm=t["max_grad_norm"], max_grad_growth=t["max_grad_growth"],
                        symmetries=self.symmetries,
                        optimizer=self.optimizers[optimizer], optimizer_state=t["optimizer_state"])

    def warm_up(self):
        """Traces every compiled function once; returns the seconds it took (not part of any run)."""
        start = time.perf_counter()
        seed = self.cfg["seeds"][0]
        points, mask, labels = self.data["train"]
        b = self.cfg["batch_size"]
        for name in self.optimizers:
            self.reset(seed, name)
            self.steps[name](points[:b], mask[:b], labels[:b])
            self.teleport(name, seed, 0)
        self.train_loss_and_accuracy("train")
        self.train_loss_and_accuracy("val")
        return time.perf_counter() - start

    def run(self, optimizer, seed, with_teleport):
        """One training run; returns per-epoch curves and teleport records."""
        self.reset(seed, optimizer)
        points, mask, labels = self.data["train"]
        b, epochs = self.cfg["batch_size"], self.cfg["epochs"]
        step = self.steps[optimizer]
        loss0, _ = self.train_loss_and_accuracy("train")
        curve, seconds, teleports = [loss0], [0.0], []
        clock = 0.0
        for epoch in range(epochs):
            order = np.random.default_rng([seed, epoch]).permutation(len(labels))
            start = time.perf_counter()
            if with_teleport and epoch in self.cfg["teleport"]["epochs"]:
                record = self.teleport(optimizer, seed, epoch)
                teleports.append({k: v for k, v in record.items() if isinstance(v, (int, float, str))})
            for i in range(len(order) // b):
                idx = order[i * b:(i + 1) * b]
                step(points[idx], mask[idx], labels[idx])
            clock += time.perf_counter() - start
            value, _ = self.train_loss_and_accuracy("train")
            curve.append(value)
            seconds.append(clock)
        _, val_accuracy = self.train_loss_and_accuracy("val")
        return {"optimizer": optimizer, "seed": seed, "teleport": with_teleport, "train_loss": curve,
                "seconds": seconds, "val_accuracy": val_accuracy, "teleports": teleports,
                "teleport_seconds": float(sum(t["seconds"] for t in teleports))}


def reach(run, target):
    """(epochs, seconds) at the first epoch end with training loss <= target, or (None, None)."""
    for epoch, (value, sec) in enumerate(zip(run["train_loss"], run["seconds"])):
        if value <= target:
            return epoch, sec
    return None, None


def summarise(runs, optimizers):
    rows = []
    for name in optimizers:
        plain = [r for r in runs if r["optimizer"] == name and not r["teleport"]]
        tele = [r for r in runs if r["optimizer"] == name and r["teleport"]]
        target = max(r["train_loss"][-1] for r in plain)
        row = {"optimizer": name, "target_loss": target}
        for arm, group in (("plain", plain), ("teleport", tele)):
            hits = [reach(r, target) for r in group]
            ok = [h for h in hits if h[0] is not None]
            row[arm] = {
                "reached": f"{len(ok)}/{len(group)}",
                "epochs_to_target": float(np.mean([h[0] for h in ok])) if ok else None,
                "seconds_to_target": float(np.mean([h[1] for h in ok])) if ok else None,
                "final_train_loss": float(np.mean([r["train_loss"][-1] for r in group])),
                "val_accuracy": float(np.mean([r["val_accuracy"] for r in group])),
                "val_accuracy_sd": float(np.std([r["val_accuracy"] for r in group])),
                "train_seconds": float(np.mean([r["seconds"][-1] for r in group])),
                "teleport_seconds": float(np.mean([r["teleport_seconds"] for r in group])),
            }
        # Paired by seed: a run that never reaches the target counts as its full training time.
        ratios = []
        for p, t in zip(sorted(plain, key=lambda r: r["seed"]), sorted(tele, key=lambda r: r["seed"])):
            ps, ts = reach(p, target)[1], reach(t, target)[1]
            ratios.append((ts if ts is not None else float("inf")) / max(ps, 1e-9))
        row["time_ratio_per_seed"] = ratios
        row["time_ratio_median"] = float(np.median(ratios))
        rows.append(row)
    return rows


def table(rows):
    def fmt(v, spec):
        return "—" if v is None else format(v, spec)

    lines = ["| optimizer | target loss | arm | reached | epochs to target | s to target | teleport s | "
             "final train loss | val acc |", "|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        for arm in ("plain", "teleport"):
            a = row[arm]
            lines.append(f"| {row['optimizer']} | {row['target_loss']:.4f} | {arm} | {a['reached']} | "
                         f"{fmt(a['epochs_to_target'], '.1f')} | {fmt(a['seconds_to_target'], '.2f')} | "
                         f"{a['teleport_seconds']:.2f} | {a['final_train_loss']:.4f} | "
                         f"{a['val_accuracy']:.3f} ± {a['val_accuracy_sd']:.3f} |")
    lines.append("")
    lines.append("| optimizer | time to target, teleport / plain (per seed) | median | verdict (≥20% less time?) |")
    lines.append("|---|---|---|---|")
    for row in rows:
        per = ", ".join("never" if r == float("inf") else f"{r:.2f}" for r in row["time_ratio_per_seed"])
        verdict = "yes" if row["time_ratio_median"] <= 0.8 else "no"
        lines.append(f"| {row['optimizer']} | {per} | {row['time_ratio_median']:.2f} | {verdict} |")
    return "\n".join(lines)


def plot(runs, optimizers, rows, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, len(optimizers), figsize=(4.2 * len(optimizers), 7), squeeze=False)
    colors = {False: "tab:blue", True: "tab:red"}
    for j, name in enumerate(optimizers):
        target = next(r["target_loss"] for r in rows if r["optimizer"] == name)
        for arm in (False, True):
            group = [r for r in runs if r["optimizer"] == name and r["teleport"] == arm]
            label = "teleport" if arm else "plain"
            curves = np.array([r["train_loss"] for r in group])
            times = np.array([r["seconds"] for r in group])
            for c, t in zip(curves, times):
                axes[0, j].plot(np.arange(len(c)), c, color=colors[arm], alpha=0.25, lw=0.8)
                axes[1, j].plot(t, c, color=colors[arm], alpha=0.25, lw=0.8)
            axes[0, j].plot(np.arange(curves.shape[1]), curves.mean(0), color=colors[arm], lw=2, label=label)
            axes[1, j].plot(times.mean(0), curves.mean(0), color=colors[arm], lw=2, label=label)
        for i, xlabel in enumerate(("epoch", "training wall time (s)")):
            ax = axes[i, j]
            ax.axhline(target, color="gray", ls="--", lw=0.8)
            ax.set_yscale("log")
            ax.set_xlabel(xlabel)
            ax.set_ylabel("training loss")
            ax.set_title(name)
            ax.legend()
    fig.suptitle("Symmetry teleportation (dashed: target loss)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def log_mlflow(cfg, runs, rows, out):
    import mlflow
    from mlflow.entities import Metric

    uri = _tracking_uri()
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        pathlib.Path(uri[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(uri)
    name = "setnet-bench-teleport"
    if mlflow.get_experiment_by_name(name) is None:
        location = (pathlib.Path("runs").resolve() / "mlartifacts").as_uri() if uri.startswith("sqlite:") else None
        mlflow.create_experiment(name, artifact_location=location)
    mlflow.set_experiment(name)
    client = mlflow.MlflowClient()
    with mlflow.start_run(run_name="bench-teleport") as parent:
        mlflow.log_params({"epochs": cfg["epochs"], "seeds": str(cfg["seeds"]), "batch_size": cfg["batch_size"],
                           "dataset": cfg["dataset"], "teleport": json.dumps(cfg["teleport"]),
                           "optimizers": json.dumps(cfg["optimizers"]), "model": json.dumps(cfg["model"])})
        for row in rows:
            mlflow.log_metric(f"{row['optimizer']}/time_ratio_median", row["time_ratio_median"])
            for arm in ("plain", "teleport"):
                for key in ("seconds_to_target", "epochs_to_target", "val_accuracy", "teleport_seconds"):
                    if row[arm][key] is not None:
                        mlflow.log_metric(f"{row['optimizer']}/{arm}/{key}", row[arm][key])
        mlflow.log_artifact(str(out / "curves.png"))
        mlflow.log_artifact(str(out / "results.json"))
        for r in runs:
            arm = "teleport" if r["teleport"] else "plain"
            with mlflow.start_run(run_name=f"{r['optimizer']}-{arm}-seed{r['seed']}", nested=True) as child:
                mlflow.log_params({"optimizer": r["optimizer"], "seed": r["seed"], "teleport": r["teleport"]})
                now = int(time.time() * 1000)
                metrics = [Metric("train_loss", v, now, e) for e, v in enumerate(r["train_loss"])]
                metrics += [Metric("wall_seconds", v, now, e) for e, v in enumerate(r["seconds"])]
                metrics.append(Metric("val_accuracy", r["val_accuracy"], now, len(r["seconds"]) - 1))
                for k, t in enumerate(r["teleports"]):
                    metrics += [Metric(f"teleport/{key}", float(t[key]), now, k) for key in
                                ("grad_norm_before", "grad_norm_after", "seconds", "loss_before", "loss_after")]
                client.log_batch(child.info.run_id, metrics=metrics)
        return parent.info.run_id


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m examples.teleport_study",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=DEFAULTS["epochs"])
    parser.add_argument("--seeds", type=int, nargs="+", default=DEFAULTS["seeds"])
    parser.add_argument("--optimizers", nargs="+", default=list(DEFAULTS["optimizers"]),
                        choices=list(DEFAULTS["optimizers"]))
    parser.add_argument("--teleport-epochs", type=int, nargs="+", default=DEFAULTS["teleport"]["epochs"])
    parser.add_argument("--group", default=DEFAULTS["teleport"]["group"], choices=("scaling", "gl", "auto"))
    parser.add_argument("--set", action="append", default=[], metavar="KEY=JSON",
                        help="override a setting, e.g. --set teleport.ascent_steps=5 "
                             "--set optimizers.sgd.learning_rate=0.1")
    parser.add_argument("--out", default="runs/teleport")
    parser.add_argument("--no-mlflow", action="store_true", help="skip MLflow logging")
    args = parser.parse_args(argv)
    cfg = json.loads(json.dumps(DEFAULTS))
    cfg.update(epochs=args.epochs, seeds=args.seeds)
    cfg["optimizers"] = {k: v for k, v in cfg["optimizers"].items() if k in args.optimizers}
    cfg["teleport"].update(epochs=args.teleport_epochs, group=args.group)
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            parser.error(f"--set {item}: expected KEY=JSON, e.g. --set teleport.ascent_steps=5")
        *path, last = key.split(".")
        target = cfg
        for depth, part in enumerate([*path, last]):
            known = list(target) if isinstance(target, dict) else []
            if part not in known:
                where = ".".join(path[:depth]) or "the top level"
                parser.error(f"--set {item}: unknown setting {key!r} ({where} has {', '.join(known) or 'no keys'})")
            if depth < len(path):
                target = target[part]
        try:
            target[last] = json.loads(value)
        except json.JSONDecodeError:
            target[last] = value
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    from tqdm import tqdm

    t0 = time.perf_counter()
    data = load_data(cfg)
    bench = Bench(cfg, data)
    print(bench.symmetries, flush=True)
    warm = bench.warm_up()
    print(f"data and model ready in {time.perf_counter() - t0:.1f} s; tracing warm-up {warm:.1f} s", flush=True)
    runs = []
    jobs = [(o, s, t) for o in cfg["optimizers"] for s in cfg["seeds"] for t in (False, True)]
    # Plain and teleported runs of a seed follow each other, so machine load hits both arms alike.
    for optimizer, seed, with_teleport in tqdm(jobs, desc="runs", file=sys.stdout):
        runs.append(bench.run(optimizer, seed, with_teleport))
    rows = summarise(runs, list(cfg["optimizers"]))
    (out / "results.json").write_text(json.dumps({"config": cfg, "warm_up_seconds": warm, "summary": rows,
                                                  "runs": runs}, indent=1, default=float))
    plot(runs, list(cfg["optimizers"]), rows, out / "curves.png")
    print(table(rows))
    tele = [t for r in runs for t in r["teleports"]]
    if tele:
        ratio = np.array([t["grad_norm_after"] / t["grad_norm_before"] for t in tele])
        print(f"\nteleports: {len(tele)}, mean {np.mean([t['seconds'] for t in tele]):.3f} s each, "
              f"gradient norm ×{np.median(ratio):.2f} (median; min {ratio.min():.2f}, max {ratio.max():.2f}), "
              f"max loss drift {max(t['max_loss_drift'] for t in tele):.1e}")
    print(f"plots and results in {out}/ (curves.png, results.json); total {time.perf_counter() - t0:.0f} s")
    if not args.no_mlflow:
        run_id = log_mlflow(cfg, runs, rows, out)
        print(f"MLflow: run {run_id} in experiment setnet-bench-teleport at {_tracking_uri()}")


if __name__ == "__main__":
    main()
