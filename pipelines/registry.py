"""Exports as versions in the MLflow Model Registry.

Every SavedModel that training exports is registered as a new version of one registered model
(the config's ``mlflow.registered_model``, default ``setnet``), linked to its run and tagged with
what a promotion needs to judge it: the git commit, the dataset and its version, the test
metrics and the permutation-invariance check of the export. Registration goes through the run's
`pipelines.tracking.Tracker` queue, after the export's artifacts, so a tracking store that is
away delays it (``--sync`` sends it later) and never loses or duplicates it: registering the same
run folder twice returns the version that exists.

`serving.promote` reads these tags (``invariance.passed`` above all) before it lets a version
into serving.

Example (an embedded store in a temporary folder)::

    import pathlib, tempfile
    from mlflow import MlflowClient
    d = pathlib.Path(tempfile.mkdtemp())
    client = MlflowClient(f"sqlite:///{d}/mlflow.db")
    run = client.create_run(client.create_experiment("demo", artifact_location=(d / "a").as_uri()))
    (d / "v1").mkdir(); (d / "v1" / "saved_model.pb").write_bytes(b"")
    client.log_artifacts(run.info.run_id, str(d / "v1"), "export/1")
    version = register_export(client, "setnet", run.info.run_id, "export/1",
                              {INVARIANCE_PASSED: "True"})
    assert register_export(client, "setnet", run.info.run_id, "export/1", {}).version == version.version
"""

from __future__ import annotations

from typing import Any, Mapping

DEFAULT_MODEL = "setnet"

# Version tags. `serving.promote` refuses a version whose INVARIANCE_PASSED is not "True".
ARTIFACT_PATH = "export.artifact_path"
INVARIANCE_PASSED = "invariance.passed"
# Run tags that point from a run to the version its export became.
RUN_MODEL_TAG = "registry.model"
RUN_VERSION_TAG = "registry.version"


def version_tags(*, commit: str, dirty: bool, dataset: str, dataset_version: Any, test: Mapping[str, float],
                 invariance: Mapping[str, Any], padding: Mapping[str, Any], export_path: str,
                 experiment: str) -> dict[str, str]:
    """The tags of a registered version, from what training knows at export time.

    Args:
        commit, dirty: the checkout's git commit and whether it had uncommitted changes.
        dataset, dataset_version: TFDS dataset name and builder version.
        test: test metrics, e.g. ``{"accuracy": 0.91, "loss": 0.3}`` (tagged ``test.accuracy`` ...).
        invariance, padding: ``pipelines.export``'s summaries of the permutation-invariance and the
            padded+masked checks (``passed``, ``max_abs_deviation``, ``clouds``, ``permutations``).
        export_path: the local version folder the export wrote.
        experiment: the MLflow experiment of the run.

    Returns:
        dict of string tags.

    Example:

    >>> tags = version_tags(commit="abc", dirty=False, dataset="digits", dataset_version="1.0.0",
    ...                     test={"accuracy": 0.9}, invariance={"passed": True}, padding={"passed": True},
    ...                     export_path="exports/m/1", experiment="setnet-digits")
    >>> tags["invariance.passed"], tags["test.accuracy"]
    ('True', '0.9')
    """
    tags = {"git.commit": commit, "git.dirty": dirty, "dataset.name": dataset,
            "dataset.version": dataset_version, "export.path": export_path, "experiment": experiment,
            INVARIANCE_PASSED: bool(invariance.get("passed")) and bool(padding.get("passed", True))}
    tags.update({f"test.{k}": v for k, v in test.items()})
    for prefix, summary in (("invariance", invariance), ("padding", padding)):
        for key in ("max_abs_deviation", "clouds", "permutations"):
            if key in summary:
                tags[f"{prefix}.{key}"] = summary[key]
        if prefix == "padding" and "passed" in summary:
            tags["padding.passed"] = summary["passed"]
    return {k: str(v) for k, v in tags.items()}


def find_version(client, name: str, run_id: str, artifact_path: str):
    """The version of ``name`` already registered from this run's ``artifact_path``, or None."""
    from mlflow.exceptions import MlflowException

    try:
        versions = client.search_model_versions(f"name = '{name}' and run_id = '{run_id}'")
    except MlflowException as e:
        if e.error_code == "RESOURCE_DOES_NOT_EXIST":
            return None
        raise
    for version in versions:
        if version.tags.get(ARTIFACT_PATH) == artifact_path:
            return version
    return None


def register_export(client, name: str, run_id: str, artifact_path: str, tags: Mapping[str, str]):
    """Register a run's exported SavedModel (artifact folder ``artifact_path``) as a new version.

    Idempotent: when this run's ``artifact_path`` is registered already (a retry after a lost
    answer, a second ``--sync``), that version is returned and nothing new is created.

    Args:
        client: an ``mlflow.MlflowClient`` (its tracking URI is the registry).
        name: registered model name; created on first use.
        run_id: the run that logged the export; the version links to it.
        artifact_path: the export's folder among the run's artifacts (``export/<n>``).
        tags: version tags (see `version_tags`).

    Returns:
        The ``ModelVersion``.
    """
    from mlflow.exceptions import MlflowException

    existing = find_version(client, name, run_id, artifact_path)
    if existing is not None:
        return existing
    try:
        client.create_registered_model(name, description="setnet set classifiers exported by training; "
                                                         "see docs/tracking.md")
    except MlflowException as e:
        if e.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    version = client.create_model_version(name, f"runs:/{run_id}/{artifact_path}", run_id=run_id,
                                          tags={**tags, ARTIFACT_PATH: artifact_path})
    client.set_tag(run_id, RUN_MODEL_TAG, name)
    client.set_tag(run_id, RUN_VERSION_TAG, str(version.version))
    return version
