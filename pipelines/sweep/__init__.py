"""Hyperparameter sweeps with Optuna, each trial a child MLflow run of one parent run: ``make sweep``
(``python -m pipelines.sweep``, docs/tracking.md).

- `pipelines.sweep.space`: the sweep file (checked against the base config), its search space,
  objective, sampler and pruner.
- `pipelines.sweep.study`: `Sweep`, what the driver and the trial processes share, and the study's
  database with heartbeats.
- `pipelines.sweep.trial`: one trial process: its config, child run, training and objective.
- `pipelines.sweep.driver`: the sweep command: parent run, trial processes, best trial.
- `pipelines.sweep.__main__`: the command line.
- `pipelines.sweep.report`: a finished or running sweep's report, read through MLflow
  (``make compare PARENT=<study>``).
"""
