"""A training job that stops dead once, mid-epoch, so that a test can SIGKILL it (test_resume.py).

    python resume_job.py MARKER [KEY=VALUE ...]

Runs `pipelines.train.train` on the config from the overrides. The first time (no MARKER file
yet) it blocks in the middle of the second epoch, after epoch 1's checkpoint, and writes MARKER
so the test knows when to kill it; afterwards the same command trains through.
"""

import os
import pathlib
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))

PAUSE_EPOCH, PAUSE_BATCH = 1, 2  # 0-based: the third batch of the second epoch


def main():
    marker = pathlib.Path(sys.argv[1])
    import keras

    from pipelines.config import load_config
    from pipelines.train import train

    class StopDeadOnce(keras.callbacks.Callback):
        epoch = -1

        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch

        def on_train_batch_end(self, batch, logs=None):
            if self.epoch == PAUSE_EPOCH and batch == PAUSE_BATCH and not marker.exists():
                marker.write_text(f"{os.getpid()}\n")
                time.sleep(600)  # the test kills the process here

    train(load_config(None, sys.argv[2:]), callbacks=[StopDeadOnce()])


if __name__ == "__main__":
    main()
