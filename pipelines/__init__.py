"""Data and training pipelines: TFDS datasets, tf.data input, distributed training, tracking."""

import os

# MLflow 3's usage telemetry posts to a public endpoint from a background thread, and sets and
# unsets an environment variable while other threads read os.environ (an MLflow request then fails
# with KeyError '_MLFLOW_TELEMETRY_SESSION_ID'). Training machines are often offline, and a run's
# tracking must not depend on it: off unless the user turns it on.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
