"""A model through `RaggedSets` and its export answer as the padded-and-masked batch."""

import numpy as np
import pytest
import tensorflow as tf

from setnet.layers import RaggedSets
from setnet.layers.ragged_test import _padded, _ragged, _sets


def test_a_model_through_ragged_sets_and_its_export_answer_as_the_masked_batch(tmp_path):
    from pipelines.export import export_model
    from setnet.models import build_regressor

    model = build_regressor({"blocks": [{"kind": "linear", "units": 8}, {"kind": "quadratic", "units": 8, "rank": 2}],
                             "head": [8]}, num_targets=2, num_features=5)
    sets = _sets(seed=2)
    points, mask = _padded(sets)
    want = model({"points": points, "mask": mask}).numpy()
    np.testing.assert_allclose(model(RaggedSets()(_ragged(sets))).numpy(), want, rtol=1e-5, atol=1e-6)
    path = export_model(model, tmp_path, "ragged", ["a", "b"], task="regression", check_clouds=sets, permutations=2)
    loaded = tf.saved_model.load(str(path))
    np.testing.assert_allclose(loaded.predict_ragged(_ragged(sets))["prediction"].numpy(), want, rtol=1e-5, atol=1e-6)
    with pytest.raises(TypeError, match="RaggedSets takes a tf.RaggedTensor"):
        RaggedSets()(points)
