"""Tests of pipelines.input on the embedded datasets (digits: real, variable-size sets)."""

import numpy as np
import pytest
import tensorflow as tf

from pipelines import datasets
from pipelines.input import AUGMENT_DEFAULTS, dataset_info, epoch_seed, make_dataset, make_epochs


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("tfds")
    datasets.prepare("digits", data_dir=d)
    datasets.prepare("synthetic_shapes/tiny", data_dir=d)
    return d


def _raw(data_dir, name, split):
    """The stored sets in the order the pipeline reads them for evaluation."""
    builder = datasets.get_builder(name, data_dir=data_dir)
    return [(ex["points"], ex["label"]) for ex in
            builder.as_dataset(split=split, shuffle_files=False).as_numpy_iterator()]


def _batches(ds, n=None):
    it = ds.as_numpy_iterator()
    return [next(it) for _ in range(n)] if n else list(it)


def _assert_same(a, b):
    assert len(a) == len(b)
    for (fa, la), (fb, lb) in zip(a, b):
        np.testing.assert_array_equal(fa["points"], fb["points"])
        np.testing.assert_array_equal(fa["mask"], fb["mask"])
        np.testing.assert_array_equal(la, lb)


def _differs(a, b):
    return any(not np.array_equal(fa["points"], fb["points"]) for (fa, _), (fb, _) in zip(a, b))


def test_dataset_info(data_dir):
    info = dataset_info("digits", data_dir=data_dir)
    assert info == {"task": "classification", "num_classes": 10, "class_names": [str(d) for d in range(10)],
                    "num_features": 3, "spatial_axes": (0, 1), "up_axis": 2,
                    "splits": {"train": 1437, "test": 360}, "version": "1.0.0"}
    info = dataset_info("synthetic_shapes/tiny", data_dir=data_dir)
    assert info["num_classes"] == 10 and info["class_names"][0] == "sphere"
    assert info["splits"] == {"train": 100, "test": 40}


def test_eval_batches_are_padded_subsets_of_the_stored_sets(data_dir):
    raw = _raw(data_dir, "digits", "test")
    batches = _batches(make_dataset("digits", "test", num_points=24, batch_size=16, data_dir=data_dir))
    assert sum(len(label) for _, label in batches) == len(raw) == 360  # eval keeps the last partial batch
    features, label = batches[0]
    assert features["points"].shape == (16, 24, 3) and features["points"].dtype == np.float32
    assert features["mask"].shape == (16, 24) and features["mask"].dtype == bool
    assert label.dtype == np.int64
    flat = [(f["points"][i], f["mask"][i], lab[i]) for f, lab in batches for i in range(len(lab))]
    sizes = set()
    for (points, mask, label), (stored, stored_label) in zip(flat, raw):
        k = min(len(stored), 24)
        sizes.add(len(stored))
        assert label == stored_label
        np.testing.assert_array_equal(mask, np.arange(24) < k)
        assert np.all(points[k:] == 0)
        rows = {tuple(p) for p in stored}
        chosen = [tuple(p) for p in points[:k]]
        assert set(chosen) <= rows and len(set(chosen)) == k  # subsample without replacement
    assert min(sizes) < 24 < max(sizes)  # both padding and subsampling were exercised


def test_same_seed_same_batches_and_new_draws_each_training_epoch(data_dir):
    kw = dict(num_points=32, batch_size=8, training=True, data_dir=data_dir,
              augment={"rotate": True, "scale": True, "jitter": True, "dropout": True})
    ds_a, ds_b = make_dataset("digits", "train", seed=5, **kw), make_dataset("digits", "train", seed=5, **kw)
    first_a, first_b = _batches(ds_a, 4), _batches(ds_b, 4)
    _assert_same(first_a, first_b)
    _assert_same(first_a, _batches(ds_a, 4))  # a dataset iterated again repeats its epoch
    second = _batches(make_dataset("digits", "train", seed=5, epoch=1, **kw), 4)
    assert _differs(first_a, second)  # epoch 2 resamples, reshuffles and re-augments
    assert _differs(first_a, _batches(make_dataset("digits", "train", seed=6, **kw), 4))


def test_an_epoch_depends_on_seed_and_epoch_only(data_dir):
    """A resumed run rebuilds epoch k alone and skips the batches already trained: it must get
    exactly the batches that a run going through epochs 0..k-1 in the same process gets."""
    kw = dict(num_points=32, batch_size=8, training=True, seed=3, data_dir=data_dir,
              augment={"rotate": True, "jitter": True, "dropout": True})
    epochs = make_epochs("digits", "train", **kw)
    through = [_batches(epochs(e), 6) for e in range(3)]
    alone = make_epochs("digits", "train", **kw)(2)
    _assert_same(through[2], _batches(alone, 6))
    _assert_same(through[2][4:], _batches(alone.skip(4), 2))
    assert _differs(through[1], through[2])
    assert epoch_seed(3, 2) == epoch_seed(3, 2) != epoch_seed(3, 1)


def test_eval_subset_is_fixed_across_epochs(data_dir):
    ds = make_dataset("synthetic_shapes/tiny", "test", num_points=64, batch_size=8, data_dir=data_dir)
    first = _batches(ds)
    _assert_same(first, _batches(ds))
    assert _differs(first, _batches(make_dataset("synthetic_shapes/tiny", "test", num_points=64,
                                                 batch_size=8, seed=1, data_dir=data_dir)))


def test_training_drops_partial_batch_and_points_are_reordered(data_dir):
    ds = make_dataset("synthetic_shapes/tiny", "train", num_points=128, batch_size=32, training=True,
                      data_dir=data_dir)
    batches = _batches(ds)
    assert [len(lab) for _, lab in batches] == [32, 32, 32]
    assert ds.element_spec[0]["points"].shape == (32, 128, 3)
    stored = {lab_pts[0].tobytes(): lab_pts[0] for lab_pts in _raw(data_dir, "synthetic_shapes/tiny", "train")}
    features, _ = batches[0]
    # All 128 points are kept but in a new order: never the stored order, always the same set.
    reordered = 0
    for points in features["points"]:
        match = [s for s in stored.values() if {tuple(p) for p in s} == {tuple(p) for p in points}]
        assert len(match) == 1
        reordered += not np.array_equal(match[0], points)
    assert reordered == len(features["points"])


def _one_batch(data_dir, name, augment, num_points=32):
    plain = make_dataset(name, "train", num_points=num_points, batch_size=16, training=True, seed=3,
                         data_dir=data_dir)
    aug = make_dataset(name, "train", num_points=num_points, batch_size=16, training=True, seed=3,
                       augment=augment, data_dir=data_dir)
    return _batches(plain, 1)[0], _batches(aug, 1)[0]


def test_rotation_turns_about_the_up_axis_only(data_dir):
    (plain, _), (rot, _) = _one_batch(data_dir, "synthetic_shapes/tiny", {"rotate": True, "up_axis": 1})
    np.testing.assert_allclose(rot["points"][..., 1], plain["points"][..., 1], atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(rot["points"], axis=-1),
                               np.linalg.norm(plain["points"], axis=-1), atol=1e-5)
    assert not np.allclose(rot["points"], plain["points"])
    # Digits: up axis 2 (intensity) by default, so rotations turn the x-y plane.
    (plain, _), (rot, _) = _one_batch(data_dir, "digits", {"rotate": True})
    np.testing.assert_array_equal(rot["points"][..., 2], plain["points"][..., 2])
    assert not np.allclose(rot["points"][..., :2], plain["points"][..., :2])


def test_scaling_is_anisotropic_and_spares_non_spatial_channels(data_dir):
    (plain, _), (scaled, _) = _one_batch(data_dir, "digits", {"scale": [0.5, 2.0]})
    np.testing.assert_array_equal(scaled["points"][..., 2], plain["points"][..., 2])
    m = plain["mask"] & (np.abs(plain["points"][..., 0]) > 0.1) & (np.abs(plain["points"][..., 1]) > 0.1)
    ratio = scaled["points"][..., :2] / np.where(m[..., None], plain["points"][..., :2], 1.0)
    for i in range(len(ratio)):
        rx, ry = ratio[i][m[i], 0], ratio[i][m[i], 1]
        np.testing.assert_allclose(rx, rx[0], rtol=1e-5)  # one factor per axis and set
        assert 0.5 <= rx[0] <= 2.0 and 0.5 <= ry[0] <= 2.0
    assert any(not np.isclose(ratio[i][m[i], 0][0], ratio[i][m[i], 1][0]) for i in range(len(ratio)))


def test_jitter_is_clipped(data_dir):
    (plain, _), (jit, _) = _one_batch(data_dir, "synthetic_shapes/tiny", {"jitter": 0.5, "jitter_clip": 0.02})
    diff = np.abs(jit["points"] - plain["points"])
    assert diff.max() <= 0.02 + 1e-6 and diff.max() > 0.019


def test_dropout_masks_points_and_zeroes_them(data_dir):
    (plain, _), (drop, _) = _one_batch(data_dir, "synthetic_shapes/tiny", {"dropout": 0.9}, num_points=128)
    assert plain["mask"].all()
    kept = drop["mask"].sum(axis=1)
    assert (kept >= 1).all() and kept.min() < 128
    assert np.all(drop["points"][~drop["mask"]] == 0)
    np.testing.assert_array_equal(drop["points"][drop["mask"]], plain["points"][drop["mask"]])


def test_bad_arguments_are_refused(data_dir):
    with pytest.raises(ValueError, match="unknown augment"):
        make_dataset("digits", "train", augment={"rotation": True}, data_dir=data_dir)
    with pytest.raises(ValueError, match="dropout"):
        make_dataset("digits", "train", augment={"dropout": 1.5}, data_dir=data_dir)
    with pytest.raises(ValueError, match="unknown dataset"):
        make_dataset("mnist", "train", data_dir=data_dir)
    assert set(AUGMENT_DEFAULTS) >= {"rotate", "scale", "jitter", "jitter_clip", "dropout"}


def test_distribution_aware(data_dir):
    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    ds = make_dataset("digits", "train", num_points=16, batch_size=8, training=True, strategy=strategy,
                      data_dir=data_dir)
    assert (ds.options().experimental_distribute.auto_shard_policy
            == tf.data.experimental.AutoShardPolicy.DATA)
    dist = iter(strategy.experimental_distribute_dataset(ds))
    features, label = next(dist)
    assert strategy.experimental_local_results(features["points"])[0].shape == (8, 16, 3)

    class TwoReplicas:  # only the attribute make_dataset reads
        num_replicas_in_sync = 2

    with pytest.raises(ValueError, match="divisible"):
        make_dataset("digits", "train", batch_size=7, strategy=TwoReplicas(), data_dir=data_dir)
