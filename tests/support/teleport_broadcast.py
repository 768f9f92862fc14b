"""Run by setnet/teleport/callback_test.py in a fresh process, because logical devices must be
configured before TensorFlow starts its runtime: two replicas whose copies of the weights and Adam
slots disagree, as after teleports on different batches; broadcast_from_first_replica must leave
both holding replica 0's values. Prints "ok <number of variables>".

    python -m tests.support.teleport_broadcast
"""

import keras
import numpy as np
import tensorflow as tf

from setnet.teleport.callback import _state_variables, broadcast_from_first_replica
from tests.support.teleport import set_model


def main():
    (cpu,) = tf.config.list_physical_devices("CPU")
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    assert strategy.num_replicas_in_sync == 2
    with strategy.scope():
        model = set_model([("linear", 6, "relu", "sum", "inside"), ("linear", 5, "linear", "mean", "inside")],
                          head=[5], seed=9)
        optimizer = keras.optimizers.Adam(0.01)
        optimizer.build(model.trainable_variables)
    variables = _state_variables(model, optimizer)
    rng = np.random.default_rng(0)
    for v in variables:
        first, second = strategy.experimental_local_results(v.value)
        first.assign(rng.normal(size=v.shape).astype("float32"))
        second.assign(rng.normal(size=v.shape).astype("float32"))
    copies = [[c.numpy().copy() for c in strategy.experimental_local_results(v.value)] for v in variables]
    assert all(not np.array_equal(a, b) for a, b in copies)
    broadcast_from_first_replica(strategy, variables)
    for v, (want, _) in zip(variables, copies):
        for local in strategy.experimental_local_results(v.value):
            np.testing.assert_array_equal(local.numpy(), want)
    print("ok", len(variables))


if __name__ == "__main__":
    main()
