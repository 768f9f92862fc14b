"""``python -m pipelines.train`` that holds once, after a chosen step, so that a test can signal it.

    python resume_job.py MARKER PAUSE_STEP [KEY=VALUE ...]

The KEY=VALUE overrides are passed as ``--set``. The first time (no MARKER file yet) the job
holds after global step PAUSE_STEP (1-based, over all epochs), writes MARKER (its pid) so the test
knows, and waits until a file MARKER.go appears (a test that SIGKILLs it never makes one);
afterwards the same command trains through. Exit codes and messages are those of
``python -m pipelines.train``. With RESUME_JOB_WEIGHTS=PATH.npz in the environment, the model's
weights at the end of training are saved there (every worker of a multi-worker job has its own).
"""

import functools
import os
import pathlib
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))


def main():
    marker, pause_step, overrides = pathlib.Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3:]
    release = marker.with_name(marker.name + ".go")
    import keras

    from pipelines import train as train_lib

    class HoldOnce(keras.callbacks.Callback):
        steps = 0
        first_run = not marker.exists()

        def on_train_batch_end(self, batch, logs=None):
            self.steps += 1
            if self.first_run and self.steps == pause_step:
                marker.write_text(f"{os.getpid()}\n")
                while not release.exists():
                    time.sleep(0.05)

        def on_train_end(self, logs=None):
            out = os.environ.get("RESUME_JOB_WEIGHTS")
            if out:
                import numpy as np

                np.savez(out, *self.model.get_weights())

    train_lib.train = functools.partial(train_lib.train, callbacks=[HoldOnce()])
    sys.exit(train_lib.main(["--set", *overrides] if overrides else []))


if __name__ == "__main__":
    main()
