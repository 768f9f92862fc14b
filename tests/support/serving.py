"""Small models, toy clouds and an in-thread server for the serving tests.

`tiny_classifier` is a pointwise MLP with masked max and mean pooling (a Deep Sets model,
Zaheer et al., NeurIPS 2017, arXiv:1703.06114, with the same two named inputs, `points`
and `mask`, as `setnet.models.build_classifier`), small enough that building, training a
few steps and exporting it costs seconds on a shared 2-core CPU.

Example:

>>> model = tiny_classifier(num_classes=3, seed=0)
>>> train_tiny(model, steps=2, seed=0)  # doctest: +SKIP
"""

from __future__ import annotations

import numpy as np


def _keras():
    import keras
    return keras


def tiny_classifier(num_classes: int = 4, hidden: int = 16, seed: int = 0):
    """A permutation-invariant classifier: inputs `points (B, N, 3)`, `mask (B, N)` -> logits."""
    keras = _keras()
    ops = keras.ops

    class MaskedMaxMeanPool(keras.layers.Layer):
        """Max and mean over the real points (mask True); padded points never count."""

        def call(self, inputs):
            x, mask = inputs
            m = ops.expand_dims(ops.cast(mask, x.dtype), -1)
            count = ops.maximum(ops.sum(m, axis=1), 1.0)
            mean = ops.sum(x * m, axis=1) / count
            biggest = ops.max(ops.where(m > 0, x, ops.full_like(x, -1e9)), axis=1)
            return ops.concatenate([biggest, mean], axis=-1)

    init = keras.initializers.GlorotUniform(seed=seed)
    points = keras.Input(shape=(None, 3), name="points", dtype="float32")
    mask = keras.Input(shape=(None,), name="mask", dtype="bool")
    # Dense on (B, N, C) acts on every point alike, so it is permutation-equivariant.
    h = keras.layers.Dense(hidden, activation="relu", kernel_initializer=init)(points)
    h = keras.layers.Dense(hidden, activation="relu",
                           kernel_initializer=keras.initializers.GlorotUniform(seed=seed + 1))(h)
    pooled = MaskedMaxMeanPool()([h, mask])
    logits = keras.layers.Dense(num_classes,
                                kernel_initializer=keras.initializers.GlorotUniform(seed=seed + 2)
                                )(pooled)
    return keras.Model({"points": points, "mask": mask}, logits, name="tiny_setnet")


def synthetic_clouds(count: int, num_points: int, seed: int = 0, num_classes: int = 4):
    """Labelled toy clouds: class k is a blob stretched along a class-specific axis pattern."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, num_classes, size=count)
    scales = np.stack([np.roll([1.0, 0.4, 0.2], k) * (1 + 0.5 * (k // 3))
                       for k in range(num_classes)])
    clouds = rng.normal(size=(count, num_points, 3)) * scales[labels][:, None, :]
    return clouds.astype(np.float32), labels.astype(np.int64)


def train_tiny(model, steps: int = 20, seed: int = 0, num_points: int = 64, batch: int = 16):
    """A few optimizer steps on synthetic clouds, so the weights are not just the init."""
    keras = _keras()
    num_classes = model.output_shape[-1]
    clouds, labels = synthetic_clouds(steps * batch, num_points, seed=seed,
                                      num_classes=num_classes)
    mask = np.ones(clouds.shape[:2], dtype=bool)
    model.compile(optimizer=keras.optimizers.Adam(1e-2),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit({"points": clouds, "mask": mask}, labels, batch_size=batch, epochs=1, verbose=0,
              shuffle=False)
    return model


class serve_in_thread:
    """Runs an ASGI app under uvicorn in a background thread: `with serve_in_thread(app) as url`."""

    def __init__(self, app, host: str = "127.0.0.1"):
        import socket

        import uvicorn
        # IPPROTO_TCP so that asyncio sets TCP_NODELAY (see serving/server/__main__.py).
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, 0))
        self.url = f"http://{host}:{self.sock.getsockname()[1]}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False,
                                                    lifespan="on"))

    def __enter__(self) -> str:
        import threading
        import time
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]},
                                       daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the test server did not start")
            time.sleep(0.02)
        return self.url

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.sock.close()
