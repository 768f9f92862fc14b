"""The network spectrum of a trained classifier on a dataset split.

  python -m pipelines.spectrum --run runs/setnet-default/<run> --out spec
  python -m pipelines.spectrum --model model.keras --dataset synthetic_shapes/small --out spec

Reads a training run folder (its config.yaml and latest checkpoint) or a saved
.keras file, feeds it batches of a split through `pipelines.input.make_dataset`,
and prints the energy of each layer's activations per isotypic component
(`setnet.spectral.network_spectrum`: trivial vs standard of S_n on the real
points of each set, or a fixed group) as a table; `--out` also writes
spectrum.md, spectrum.json and spectrum.png. Unset data options come from the
run's config, else the defaults shown in --help. docs/spectral.md explains the
reading. The library-only spectral tools are `python -m setnet.spectral`.
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import tempfile
import time


def load_run(run_dir):
    """The classifier of a training run folder (config.yaml + latest checkpoint) and the run's data section.

    Args:
        run_dir: a folder written by `pipelines.train` (``runs/<experiment>/<run name>``).

    Returns:
        ``(model, data, name)``: the Keras model with the checkpoint's weights, the run's
        ``DataConfig`` and a label ``"<run> (<checkpoint>)"`` for titles.

    Raises:
        ValueError: the folder is not a run folder, has no checkpoint yet, or its config is invalid.

    Example:
    >>> load_run("/nonexistent")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: /nonexistent is not a training run folder (no config.yaml); give the folder that ...
    """
    run_dir = pathlib.Path(run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise ValueError(f"{run_dir} is not a training run folder (no config.yaml); give the folder that "
                         "`make train` printed as 'run folder', e.g. runs/<experiment>/<run name>")

    import tensorflow as tf

    from pipelines.config import load_config
    from pipelines.input import dataset_info
    from setnet.models import build_classifier

    cfg = load_config(run_dir / "config.yaml")
    latest = tf.train.latest_checkpoint(str(run_dir / "checkpoints"))
    if latest is None:
        raise ValueError(f"{run_dir} has no checkpoint yet (checkpoints/ is empty); train at least one epoch")
    data = cfg.data
    info = dataset_info(data.name, data_dir=data.data_dir, manual_dir=data.manual_dir,
                        allow_partial=data.allow_partial)
    model = build_classifier(cfg.model, num_classes=info["num_classes"])
    # The checkpoint also holds the optimizer and the epoch counter; only the weights are needed here.
    tf.train.Checkpoint(model=model).restore(latest).expect_partial().assert_existing_objects_matched()
    return model, data, f"{run_dir.name} ({pathlib.Path(latest).name})"


def log_spectrum_to_mlflow(spectrum: list[dict], step: int | None = None, prefix: str = "spectrum",
                           run_id: str | None = None, artifact_path: str = "spectrum", client=None) -> None:
    """Log a spectrum to MLflow: the metrics of ``spectrum_metrics`` and, as artifacts, the files of
    ``write_spectrum_artifacts``.

    Args:
        spectrum: the output of ``setnet.spectral.network_spectrum``.
        step: the metric step (e.g. the epoch); artifacts then go to ``<artifact_path>/step_<step>``.
        prefix: metric name prefix.
        run_id: the run to log to; default the active run.
        artifact_path: folder for the artifacts in the run.
        client: an ``MlflowClient`` (default: one for the current tracking URI).

    Example:
    >>> log_spectrum_to_mlflow([])  # outside any run
    Traceback (most recent call last):
    ...
    ValueError: no MLflow run: call inside `with mlflow.start_run():` or pass run_id
    """
    import mlflow
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    from setnet.spectral.spectrum import spectrum_metrics, write_spectrum_artifacts

    run_id = run_id or (mlflow.active_run().info.run_id if mlflow.active_run() else None)
    if run_id is None:
        raise ValueError("no MLflow run: call inside `with mlflow.start_run():` or pass run_id")
    client = client or MlflowClient()
    now = int(time.time() * 1000)
    client.log_batch(run_id, metrics=[Metric(k, v, now, step or 0)
                                      for k, v in spectrum_metrics(spectrum, prefix).items()])
    with tempfile.TemporaryDirectory() as tmp:
        write_spectrum_artifacts(spectrum, tmp)
        client.log_artifacts(run_id, tmp, artifact_path if step is None else f"{artifact_path}/step_{step}")


def _spectrum(args) -> int:
    if (args.model is None) == (args.run is None):
        raise ValueError("give exactly one of --model (a .keras file) and --run (a training run folder)")
    if args.model is not None and not pathlib.Path(args.model).exists():
        raise ValueError(f"no model file at {args.model}; give a .keras file, or --run with a training run folder")

    data = None
    if args.run is not None:
        model, data, name = load_run(args.run)  # checks the folder before TensorFlow loads
    else:
        import keras

        import setnet.layers  # noqa: F401  (registers the layers for loading)

        model, name = keras.saving.load_model(args.model), pathlib.Path(args.model).name

    from pipelines.input import make_dataset
    from setnet.spectral.spectrum import network_spectrum, spectrum_table, write_spectrum_artifacts

    dataset = args.dataset or (data.name if data else "synthetic_shapes")
    split = args.split or (data.test_split if data else "test")
    ds = make_dataset(dataset, split,
                      num_points=args.num_points or (data.num_points if data else 1024),
                      batch_size=args.batch_size or (data.batch_size if data else 32),
                      data_dir=args.data_dir or (data.data_dir if data else None),
                      manual_dir=data.manual_dir if data else None,
                      allow_partial=data.allow_partial if data else False)
    rows = network_spectrum(model, ds, args.group, max_batches=args.max_batches)
    print(spectrum_table(rows))
    if args.out:
        for path in write_spectrum_artifacts(rows, args.out, f"{name} on {dataset} {split}"):
            print(f"wrote {path}")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipelines.spectrum", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", help="a training run folder (runs/<experiment>/<run>): its config and latest "
                                      "checkpoint")
    parser.add_argument("--model", help="a .keras file (e.g. a saved setnet classifier)")
    parser.add_argument("--dataset", help="dataset name for pipelines.input.make_dataset (default: the run's, "
                                          "else synthetic_shapes)")
    parser.add_argument("--split", help="split or slice (default: the run's test split, else test)")
    parser.add_argument("--group", default="S", help="S (permutations of each set's real points) or a fixed "
                                                     "group spec")
    parser.add_argument("--num-points", type=int, help="points per set (default: the run's, else 1024)")
    parser.add_argument("--batch-size", type=int, help="default: the run's, else 32")
    parser.add_argument("--max-batches", type=int, default=16)
    parser.add_argument("--data-dir", default=None, help="TFDS data directory (default: the run's)")
    parser.add_argument("--out", help="folder for spectrum.md, spectrum.json and spectrum.png")
    args = parser.parse_args(argv)
    for flag in ("num_points", "batch_size", "max_batches"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            parser.error(f"--{flag.replace('_', '-')} must be at least 1, got {value}")
    try:
        return _spectrum(args)
    except (ValueError, RuntimeError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
