"""Hyperparameter sweeps with Optuna, tracked as one MLflow parent run: ``make sweep``.

    python -m pipelines.sweep --config configs/digits.yaml --sweep sweeps/default.yaml
    python -m pipelines.sweep --config configs/digits.yaml --sweep sweeps/default.yaml \\
        --trials 2 --parallel 2 --set train.epochs=2
    python -m pipelines.sweep ... --storage postgresql://user@db/optuna     # many machines, one sweep

The sweep file names a search space over any config key (choices, ranges, log-uniform ranges),
the objective (a per-epoch metric such as ``val_accuracy``), the sampler (grid, random or TPE)
and the pruner (median, on the per-epoch objective). ``--set`` applies to every trial,
``--trials`` caps the number of trials, ``--parallel K`` runs K trials at once.

Each trial is a process of its own that trains one config (`pipelines.train.train`) in the run
folder ``<runs_dir>/<experiment>/<study>-t<n>``, as a child MLflow run under the sweep's parent
run (which holds the sweep file, the base config and the best trial). The study lives in an
Optuna database (default ``sqlite:///<runs_dir>/optuna.db``, beside the MLflow store) with
heartbeats: a sweep killed with ``kill -9`` takes its trial processes with it, and the same
command run again finds the study and the parent run, marks the trials that lost their
heartbeat as failed, retries each of them once more as the same trial (same parameters, same
run folder: training resumes from its last checkpoint, the child run continues) and then goes on
with new trials. See docs/tracking.md.
"""

from __future__ import annotations

import argparse
import sys

from pipelines.sweep.driver import drive
from pipelines.sweep.space import SweepError
from pipelines.sweep.study import Sweep
from pipelines.sweep.trial import worker_main


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m pipelines.sweep", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=None, help="base training config (default: configs/default.yaml)")
    p.add_argument("--sweep", required=True, help="sweep file: search space, objective, sampler (sweeps/*.yaml)")
    p.add_argument("--trials", type=int, default=None, help="number of trials (default: the sweep file's)")
    p.add_argument("--parallel", type=int, default=1, help="trials at once, each a process (default: 1)")
    p.add_argument("--set", dest="overrides", action="append", nargs="+", default=[], metavar="KEY=VALUE",
                   help="config override for every trial, e.g. --set train.epochs=2")
    p.add_argument("--storage", default=None,
                   help="Optuna storage URL (default: sqlite:///<runs_dir>/optuna.db); a shared database "
                        "(postgresql://...) lets machines work on one sweep")
    p.add_argument("--study-name", default=None, help="study name (default: the sweep file's study, else "
                                                      "<experiment>-<sweep file name>)")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    return p


def main(argv=None) -> int:
    """The sweep command (or, with ``--worker``, one trial process); returns the exit code.

    Bad input (sweep file, config, ``--set``, arguments) prints one line and returns 2.

    Example::

        main(["--config", "configs/digits.yaml", "--sweep", "sweeps/default.yaml", "--trials", "2",
              "--set", "train.epochs=2"])
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(argv)
    from pipelines.config import ConfigError

    if args.parallel < 1:
        print(f"error: --parallel must be >= 1, got {args.parallel}", file=sys.stderr)
        return 2
    try:
        ctx = Sweep(args)
        if args.worker:
            return worker_main(ctx, args.worker)
        return drive(ctx, argv)
    except (SweepError, ConfigError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
