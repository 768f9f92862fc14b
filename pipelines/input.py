"""tf.data input pipeline over the TFDS point-cloud datasets.

`make_dataset` yields `({"points": float32 (B, N, F), "mask": bool (B, N)}, label int64 (B,))` (a
regression dataset: `target` float32 (B, T) in place of the label) with N = `num_points` and F the
dataset's features per point: every set is subsampled to at most `num_points` points (without replacement, in
random order), augmented when training, and padded with zeros up to `num_points`; `mask` marks the
real points. Sets smaller than `num_points` (digits) and dropped points (point dropout) are padding.
Rotation, scaling and jitter act on the dataset's three coordinate features only (`spatial_axes`:
its `xyz_columns`, else the first three features when there are three or more); the other
features pass unchanged.

Randomness is seeded and stateless per example: the same `seed` gives the same batches in the same
order (test: input_test.py). Training draws a fresh subsample, order and augmentation every epoch,
keyed by `(seed, epoch)` alone: epoch 7 of a run resumed after a crash is batch for batch epoch 7
of an uninterrupted run, and a resume in the middle of an epoch skips the batches already trained
(`make_epochs` shares one decoded copy of the split between the epochs). Evaluation
(`training=False`) uses one fixed subsample per example, the same every epoch.

Example:

    from pipelines.input import make_dataset, dataset_info
    ds = make_dataset("synthetic_shapes/small", "train", num_points=128, batch_size=8, training=True,
                      augment={"rotate": True, "scale": [0.8, 1.25], "jitter": 0.01, "dropout": 0.5})
    (features, label), = ds.take(1)
    features["points"].shape, features["mask"].shape, label.shape   # (8, 128, 3) (8, 128) (8,)
"""

from __future__ import annotations

import math

import tensorflow as tf

from pipelines import datasets

# `augment` keys and what `True` stands for. Values follow PointNet/PointNet++ training practice.
AUGMENT_DEFAULTS = {
    "rotate": 2 * math.pi,       # max angle (radians) of a random rotation about the up axis
    "scale": (0.8, 1.25),        # anisotropic: one factor per spatial axis from this range
    "jitter": 0.01,              # Gaussian sigma per coordinate ...
    "jitter_clip": 0.05,         # ... clipped to +-this
    "dropout": 0.875,            # point dropout: a ratio drawn from [0, this] of points masked out
    "up_axis": None,             # override the dataset's up axis (ModelNet: 1 = y, digits: 2)
}


def _normalize_augment(augment) -> dict:
    """Validates an `augment` dict; returns {key: value} with disabled entries dropped."""
    if augment is None:
        return {}
    if not isinstance(augment, dict):
        raise TypeError(f"augment must be a dict like {{'rotate': True, 'jitter': 0.01}}, got {augment!r}")
    unknown = sorted(set(augment) - set(AUGMENT_DEFAULTS))
    if unknown:
        raise ValueError(f"unknown augment key(s) {unknown}; known: {sorted(AUGMENT_DEFAULTS)}")
    out = {}
    for key, value in augment.items():
        if value is None or value is False or (key != "up_axis" and value == 0):
            continue
        if value is True:
            value = AUGMENT_DEFAULTS[key]
        if key == "scale":
            lo, hi = (float(v) for v in value)
            if not 0 < lo <= hi:
                raise ValueError(f"augment['scale'] must be [low, high] with 0 < low <= high, got {value!r}")
            value = (lo, hi)
        elif key == "up_axis":
            if value not in (0, 1, 2):
                raise ValueError(f"augment['up_axis'] must be 0, 1 or 2, got {value!r}")
        else:
            value = float(value)
            if value < 0 or (key == "dropout" and value >= 1):
                raise ValueError(f"augment[{key!r}] out of range: {value!r}"
                                 + (" (dropout ratio must be in [0, 1))" if key == "dropout" else ""))
        out[key] = value
    return out


def dataset_info(name: str, data_dir=None, manual_dir=None, allow_partial: bool = False,
                 params: dict | None = None) -> dict:
    """Prepares `name` if needed and describes it.

    Returns:
      dict with `task` ("classification" or "regression"), `num_features` (F), `spatial_axes`,
      `up_axis`, `splits` ({split: count}), `version`, and `num_classes` and `class_names`
      (classification) or `num_targets` and `target_names` (regression). `params` are the
      `set_folder` / `set_table` builder's parameters (`pipelines.datasets.get_builder`).
    """
    builder = datasets.prepare(name, data_dir=data_dir, manual_dir=manual_dir,
                               allow_partial=allow_partial, params=params)
    return describe(builder)


def describe(builder) -> dict:
    """`dataset_info`'s answer for a prepared builder (see there)."""
    features = builder.info.features
    meta = builder.info.metadata or {}
    num_features = int(features["points"].shape[-1])
    axes = spatial_axes(meta, num_features)
    out = {"num_features": num_features, "spatial_axes": axes,
           "up_axis": int(meta.get("up_axis", axes[1] if len(axes) == 3 else 1)),
           "splits": {k: int(v.num_examples) for k, v in builder.info.splits.items()},
           "version": str(builder.info.version)}
    if "target" in features:
        names = list(meta.get("target_names") or [f"target{i}" for i in range(features["target"].shape[-1])])
        out.update(task="regression", num_targets=len(names), target_names=names)
    else:
        names = list(features["label"].names)
        out.update(task="classification", num_classes=len(names), class_names=names)
    return out


def spatial_axes(meta, num_features: int) -> tuple[int, ...]:
    """The coordinate features augmentation acts on: the dataset's own (`metadata["spatial_axes"]`,
    from its xyz columns), else the first three when there are three or more, else none."""
    axes = tuple(int(a) for a in (meta.get("spatial_axes") or ()))
    if axes:
        return axes
    return (0, 1, 2) if num_features >= 3 else ()


def _rotation_about(axis: int, angle):
    c, s = tf.cos(angle), tf.sin(angle)
    one, zero = tf.ones_like(c), tf.zeros_like(c)
    # Right-handed rotation about `axis`, acting on row vectors as points @ R.
    rows = {0: [[one, zero, zero], [zero, c, s], [zero, -s, c]],
            1: [[c, zero, -s], [zero, one, zero], [s, zero, c]],
            2: [[c, s, zero], [-s, c, zero], [zero, zero, one]]}[axis]
    return tf.stack([tf.stack(r) for r in rows])


def _rotation_axes(spatial_axes, up_axis: int, channels: int) -> tuple[int, ...]:
    """The three features a rotation about the up axis mixes: the coordinates and the up axis
    (digits: x, y are coordinates and the rotation about z, the ink, turns them in their plane)."""
    axes = tuple(sorted(set(spatial_axes) | ({up_axis} if 0 <= up_axis < channels else set())))
    return axes if len(axes) == 3 else ()


def _rotation_in(channels: int, axes, up_axis: int, angle):
    """(F, F): the identity, with a rotation about the up axis on the three features `axes`."""
    block = _rotation_about(list(axes).index(up_axis), angle)
    index = [[a, b] for a in axes for b in axes]
    return tf.tensor_scatter_nd_update(tf.eye(channels), index, tf.reshape(block, [-1]))


def _make_example_fn(num_points: int, training: bool, augment: dict, up_axis: int, spatial_axes,
                     channels: int = 3):
    spatial = tf.constant([1.0 if a in spatial_axes else 0.0 for a in range(channels)])
    up_axis = augment.get("up_axis", up_axis)
    rotation_axes = _rotation_axes(spatial_axes, up_axis, channels)
    if not spatial_axes:  # no coordinates: nothing for the geometric augmentations to act on
        augment = {k: v for k, v in augment.items() if k not in ("rotate", "scale", "jitter")}
    elif not rotation_axes:
        augment = {k: v for k, v in augment.items() if k != "rotate"}

    def fn(points, label, seed):
        # One stateless stream per example: `seed` (2,) comes from a seeded random dataset.
        seeds = tf.random.experimental.stateless_split(seed, num=6)
        n = tf.shape(points)[0]
        k = tf.minimum(n, num_points)
        # First k of a random permutation: a subsample without replacement, in random order.
        order = tf.argsort(tf.random.stateless_uniform([n], seed=seeds[0]))[:k]
        pts = tf.gather(points, order)
        mask = tf.ones([k], tf.bool)
        if training and augment:
            if "rotate" in augment:
                angle = tf.random.stateless_uniform([], seeds[1], 0.0, augment["rotate"])
                pts = pts @ _rotation_in(channels, rotation_axes, up_axis, angle)
            if "scale" in augment:
                lo, hi = augment["scale"]
                factors = tf.random.stateless_uniform([channels], seeds[2], lo, hi)
                pts = pts * (spatial * factors + (1.0 - spatial))
            if "jitter" in augment:
                clip = augment.get("jitter_clip", AUGMENT_DEFAULTS["jitter_clip"])
                noise = tf.random.stateless_normal([k, channels], seeds[3], stddev=augment["jitter"])
                pts = pts + tf.clip_by_value(noise, -clip, clip) * spatial
            if "dropout" in augment:
                ratio = tf.random.stateless_uniform([], seeds[4], 0.0, augment["dropout"])
                keep = tf.random.stateless_uniform([k], seeds[5]) >= ratio
                keep = tf.tensor_scatter_nd_update(keep, [[0]], [True])  # never drop a whole set
                mask = keep
                pts = pts * tf.cast(keep, pts.dtype)[:, None]
        return {"points": pts, "mask": mask}, label

    return fn


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of one training epoch: a function of ``(seed, epoch)`` only, so that any epoch can
    be rebuilt on its own (a resumed run) and neighbouring epochs draw unrelated streams."""
    import numpy as np

    return int(np.random.SeedSequence([int(seed), int(epoch)]).generate_state(1, np.uint32)[0])


def make_epochs(name: str, split: str, *, num_points: int = 1024, batch_size: int = 32,
                training: bool = False, augment: dict | None = None, seed: int = 0, data_dir=None,
                manual_dir=None, allow_partial: bool = False, strategy=None, cache: bool = True,
                params: dict | None = None):
    """``epoch -> tf.data.Dataset``: the batches of one epoch of split `split` of dataset `name`.

    The split is read (and, with `cache`, decoded into memory) once, shared by every epoch built
    from the returned function. Training batches depend on ``(seed, epoch)`` only: the shuffle
    order, the subsample of each set and its augmentation (`epoch_seed`); a dataset iterated twice
    repeats its epoch. Arguments as in `make_dataset`.

    Example:

    >>> epochs = make_epochs("digits", "train", num_points=32, batch_size=8, training=True)
    >>> third = epochs(2)                      # epoch 3 without running epochs 1 and 2
    >>> resumed = epochs(2).skip(5)            # ... from its sixth batch on
    """
    if num_points < 1 or batch_size < 1:
        raise ValueError(f"num_points and batch_size must be >= 1, got {num_points} and {batch_size}")
    aug = _normalize_augment(augment)
    if strategy is not None and batch_size % strategy.num_replicas_in_sync:
        raise ValueError(f"batch_size {batch_size} is the global batch and must be divisible by the "
                         f"{strategy.num_replicas_in_sync} replicas of {type(strategy).__name__}")
    import tensorflow_datasets as tfds

    builder = datasets.prepare(name, data_dir=data_dir, manual_dir=manual_dir,
                               allow_partial=allow_partial, params=params)
    info = describe(builder)
    channels, up_axis, axes = info["num_features"], info["up_axis"], info["spatial_axes"]
    regression = info["task"] == "regression"
    num_examples = builder.info.splits[split].num_examples
    if num_examples == 0:
        raise ValueError(f"split {split!r} of {name} has no examples")

    # The files come in one fixed (seeded) order every time; the per-epoch shuffle below does the
    # rest. Re-shuffling files per iteration would tie an epoch's order to how many times this
    # process has read the split, which a resumed process does not share.
    read_config = tfds.ReadConfig(shuffle_seed=seed, shuffle_reshuffle_each_iteration=False,
                                  try_autocache=False)
    source = builder.as_dataset(split=split, shuffle_files=training, read_config=read_config)
    key = "target" if regression else "label"
    source = source.map(lambda ex: (ex["points"], ex[key]), num_parallel_calls=tf.data.AUTOTUNE)
    if cache:
        source = source.cache()
    example_fn = _make_example_fn(num_points, training, aug, up_axis, axes, channels)
    label_shape, label_pad = ([info["num_targets"]], tf.constant(0.0)) if regression else ([], tf.constant(0, tf.int64))

    def epoch_dataset(epoch: int = 0) -> tf.data.Dataset:
        ds = source
        stream = epoch_seed(seed, epoch) if training else seed
        if training:
            ds = ds.shuffle(min(num_examples, 10_000), seed=stream, reshuffle_each_iteration=False)
        # Pairs of int64 per example as stateless seeds.
        seeds = tf.data.Dataset.random(seed=stream, rerandomize_each_iteration=False).batch(2)
        ds = tf.data.Dataset.zip(ds, seeds).map(lambda example, s: example_fn(*example, s),
                                                num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        ds = ds.padded_batch(
            batch_size,
            padded_shapes=({"points": [num_points, channels], "mask": [num_points]}, label_shape),
            padding_values=({"points": 0.0, "mask": False}, label_pad),
            drop_remainder=training and num_examples >= batch_size)
        ds = ds.prefetch(tf.data.AUTOTUNE)
        options = tf.data.Options()
        options.deterministic = True
        options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
        return ds.with_options(options)

    return epoch_dataset


def make_dataset(name: str, split: str, *, num_points: int = 1024, batch_size: int = 32,
                 training: bool = False, augment: dict | None = None, seed: int = 0, epoch: int = 0,
                 data_dir=None, manual_dir=None, allow_partial: bool = False, strategy=None,
                 cache: bool = True, params: dict | None = None) -> tf.data.Dataset:
    """Batched, padded, masked tf.data pipeline over split `split` of dataset `name`.

    Args:
      name: "synthetic_shapes", "digits", "modelnet40" or "modelnet10" (optionally "name/config").
        Prepared on first use; ModelNet raises `pipelines.datasets.DataNotFoundError` when its files
        are not on this machine.
      split: a TFDS split ("train", "test", "train[:90%]", ...).
      num_points: points per set after subsampling; smaller sets are padded (mask False).
      batch_size: the GLOBAL batch size; with a `strategy` each replica gets
        batch_size / strategy.num_replicas_in_sync (must divide evenly).
      training: shuffle, resample points and augment per epoch, and drop the last partial batch.
      augment: dict of augmentations, applied only when `training` (see `AUGMENT_DEFAULTS`);
        `True` for a key means its default, e.g. {"rotate": True, "scale": [0.9, 1.1], "jitter": 0.01,
        "jitter_clip": 0.05, "dropout": 0.5}.
      seed: seeds file order, shuffling, subsampling and augmentation.
      epoch: which training epoch's draws (0-based; `epoch_seed`). Iterating the dataset again
        repeats them: build one dataset per epoch (`make_epochs` shares the decoded split).
      data_dir, manual_dir, allow_partial, params: see `pipelines.datasets.prepare`.
      strategy: a `tf.distribute.Strategy`, or None. The result can be passed to
        `strategy.experimental_distribute_dataset` (or to `model.fit` in the strategy's scope); its
        auto-shard policy is DATA so that every worker reads the TFDS files and keeps its share.
      cache: keep the decoded split in memory after the first epoch.

    Returns:
      A `tf.data.Dataset` of `({"points": float32 (B, num_points, F), "mask": bool (B, num_points)},
      label int64 (B,))`, or target float32 (B, T) for a regression dataset.
    """
    return make_epochs(name, split, num_points=num_points, batch_size=batch_size, training=training,
                       augment=augment, seed=seed, data_dir=data_dir, manual_dir=manual_dir,
                       allow_partial=allow_partial, strategy=strategy, cache=cache, params=params)(epoch)
