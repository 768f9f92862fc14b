"""Set classifiers built from setnet.layers: `build_classifier(config)` and the PointNet baseline.

>>> from setnet.models import build_classifier
>>> model = build_classifier({"num_classes": 4, "blocks": [{"kind": "linear", "units": 16}], "head": [16]})
>>> sorted(model.input)
['mask', 'points']
"""

from setnet.models.classifier import BLOCK_DEFAULTS, MODEL_DEFAULTS, build_classifier
from setnet.models.pointnet import build_pointnet

__all__ = ["BLOCK_DEFAULTS", "MODEL_DEFAULTS", "build_classifier", "build_pointnet"]
