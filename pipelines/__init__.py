"""Data and training pipelines: TFDS datasets, tf.data input, distributed training, tracking."""

import os

# MLflow's settings, here so that they are in place before any pipelines module imports mlflow;
# each only where the user has not chosen otherwise.
#
# MLflow 3's usage telemetry posts to a public endpoint from a background thread, and sets and
# unsets an environment variable while other threads read os.environ (an MLflow request then fails
# with KeyError '_MLFLOW_TELEMETRY_SESSION_ID'). Training machines are often offline, and a run's
# tracking must not depend on it: off unless the user turns it on.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

# A dead server must cost seconds per flush, not MLflow's default minutes of retries.
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
# MLflow 3 refuses its file store (file: URIs, plain folders) unless this is set, although the store
# still works; whoever names a file: URI asks for it. An explicit MLFLOW_ALLOW_FILE_STORE=false wins.
os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
