"""Runs the training loop once under one strategy and saves the weights (used by test_distributed.py).

    python distributed_worker.py MODE OUT.npz [--init INIT.npz] [--normalization] [--no-xla] [--optimizer sgd]

MODE: ``single`` (default strategy), ``mirrored`` (2 logical CPU devices), ``worker``
(MultiWorkerMirroredStrategy from TF_CONFIG), or ``both`` (single, then mirrored from the same
initial weights, in one process: saves OUT with keys single/* and mirrored/*). The initial weights
are saved too (init/*), and a JSON report beside OUT (losses, replica spread, XLA traces).
"""

import argparse
import json
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

BATCH = 16
STEPS = 4
EPOCHS = 2


def run(strategy, init, normalization, xla, optimizer="adam"):
    from pipelines import loop
    from tests.support.training import build, tiny_dataset

    model, optimizer = build(strategy, normalization, init, optimizer=optimizer)
    init = model.get_weights()
    trainer = loop.Trainer(model, optimizer, strategy, xla=xla, verbose=0)
    ds = loop.prepare(tiny_dataset(BATCH), batch_size=BATCH, training=True, strategy=strategy)
    history = trainer.fit(ds, None, epochs=EPOCHS, train_steps=STEPS)
    # Replicas of every mirrored variable must hold the same value (normalisation statistics too).
    spread = 0.0
    for v in model.variables:
        parts = getattr(v.value, "values", None)
        if parts and len(parts) > 1:
            spread = max(spread, max(float(abs(p.numpy() - parts[0].numpy()).max()) for p in parts))
    return model, trainer, history, spread, init


def main():
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["single", "mirrored", "worker", "both"])
    p.add_argument("out")
    p.add_argument("--init")
    p.add_argument("--normalization", action="store_true")
    p.add_argument("--no-xla", action="store_true")
    p.add_argument("--optimizer", choices=["adam", "sgd"], default="adam")
    args = p.parse_args()
    import tensorflow as tf

    if args.mode in ("mirrored", "both"):
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import numpy as np

    from pipelines.distribute import make_strategy

    init = None
    if args.init:
        saved = np.load(args.init)
        keys = sorted(k for k in saved if k.startswith("init/")) or sorted(saved)
        init = [saved[k] for k in keys]
    modes = ["single", "mirrored"] if args.mode == "both" else [args.mode]
    out, report = {}, {}
    for mode in modes:
        strategy = make_strategy({"single": "one_device", "mirrored": "mirrored", "worker": "multi_worker"}[mode])
        # Every mode starts from the first mode's initial weights (or --init).
        model, trainer, history, spread, init = run(strategy, init, args.normalization, not args.no_xla, args.optimizer)
        for i, w in enumerate(model.get_weights()):
            out[f"{mode}/{i:03d}"] = w
        if mode == modes[0]:
            for i, w in enumerate(init):
                out[f"init/{i:03d}"] = w
        report[mode] = {"replicas": strategy.num_replicas_in_sync, "loss": [h["loss"] for h in history],
                        "replica_spread": spread, "compilations": dict(trainer.compilations),
                        "distributed": trainer.distributed}
    np.savez(args.out, **out)
    pathlib.Path(args.out).with_suffix(".json").write_text(json.dumps(report))


if __name__ == "__main__":
    main()
