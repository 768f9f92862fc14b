"""`RaggedSets`: a ``tf.RaggedTensor`` of sets as the padded ``points`` and ``mask`` a set model takes."""

from __future__ import annotations

import keras

from setnet.layers import set_ops


@keras.saving.register_keras_serializable(package="setnet")
class RaggedSets(keras.layers.Layer):
    """Turns sets of different sizes, a ``tf.RaggedTensor`` ``(batch, None, F)``, into
    ``{"points": (batch, N_max, F), "mask": (batch, N_max)}``: zero-padded to the largest set, the
    mask true at the real points. A model built by `setnet.models.build_classifier` (or any model
    with those two inputs) then answers each set as it answers the padded-and-masked batch.

    Example:

    >>> import tensorflow as tf
    >>> sets = tf.ragged.constant([[[0.0, 1.0, 2.0]], [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]], ragged_rank=1)
    >>> inputs = RaggedSets()(sets)
    >>> tuple(inputs["points"].shape), inputs["mask"].numpy().tolist()
    ((2, 2, 3), [[True, False], [True, True]])

    With a model: ``logits = model(RaggedSets()(sets))``.
    """

    def call(self, inputs):
        if not set_ops.is_ragged(inputs):
            raise TypeError(f"RaggedSets takes a tf.RaggedTensor of sets (batch, None, F), got "
                            f"{type(inputs).__name__}; dense sets go to the model with their mask directly")
        points, mask = set_ops.ragged_to_masked(inputs)
        return {"points": points, "mask": mask}
