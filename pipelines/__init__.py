"""Data and training pipelines: TFDS datasets, tf.data input, distributed training."""
