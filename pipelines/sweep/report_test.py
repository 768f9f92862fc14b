"""A sweep's trials table shows the test figures of its task: accuracy for a classification,
MAE and RMSE for a regression. (Against a real MLflow server: tests/training/test_sweep.py.)"""

import json
from types import SimpleNamespace

from pipelines.sweep.report import format_trials, sweep_trials


class _Client:
    """What `sweep_trials` asks of an MlflowClient, over child runs given as {name: (metrics, curves)}."""

    def __init__(self, children: dict):
        self.children = children

    def search_runs(self, experiment_ids, filter_string):
        return [SimpleNamespace(info=SimpleNamespace(run_id=name, run_name=name, status="FINISHED"),
                                data=SimpleNamespace(metrics=metrics, tags={
                                    "sweep.trial": name[-1], "sweep.state": "COMPLETE",
                                    "sweep.params": json.dumps({"train.loss": "mse"})}))
                for name, (metrics, _) in self.children.items()]

    def get_metric_history(self, run_id, key):
        values = self.children[run_id][1].get(key, [])
        return [SimpleNamespace(step=i + 1, value=v) for i, v in enumerate(values)]


def _parent(objective: str, direction: str):
    params = {"sweep.objective": objective, "sweep.direction": direction,
              "sweep.space": json.dumps({"train.loss": {"choices": ["mse", "huber"]}})}
    return SimpleNamespace(info=SimpleNamespace(run_id="p", experiment_id="1"),
                           data=SimpleNamespace(params=params, tags={"sweep.study": "s"}))


def test_a_regression_sweep_table_shows_test_mae_and_rmse_best_mae_first():
    client = _Client({
        "t0": ({"test_mae": 0.4, "test_rmse": 0.5}, {"loss": [1.0, 0.9], "mae": [0.8, 0.7], "val_mae": [0.6, 0.45]}),
        "t1": ({"test_mae": 0.2, "test_rmse": 0.3}, {"loss": [1.0, 0.8], "mae": [0.7, 0.5], "val_mae": [0.5, 0.25]}),
    })
    trials, facts = sweep_trials(client, _parent("val_mae", "minimize"))
    assert [(t["trial"], t["value"], t["task"]) for t in trials] == [(1, 0.25, "regression"), (0, 0.45, "regression")]
    head, _, best, _ = format_trials(trials, facts).splitlines()
    assert head.split() == ["trial", "state", "epochs", "val_mae", "test", "mae", "test", "rmse", "version",
                            "train.loss"]
    assert best.split()[:6] == ["1", "COMPLETE", "2", "0.2500", "0.2", "0.3"]


def test_a_classification_sweep_table_keeps_its_test_accuracy():
    client = _Client({"t0": ({"test_accuracy": 0.75}, {"loss": [1.0], "accuracy": [0.6], "val_accuracy": [0.7]})})
    trials, facts = sweep_trials(client, _parent("val_accuracy", "maximize"))
    assert trials[0]["task"] == "classification"
    head, _, row = format_trials(trials, facts).splitlines()
    assert "test acc" in head and "mae" not in head and row.split()[3:5] == ["0.7000", "0.7500"]
