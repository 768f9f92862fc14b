"""Set classifiers built from setnet.layers: `build_classifier(config)` and the PointNet baseline.

`ModelConfig` (setnet/models/config.py) holds the model section and every default; importing it
loads no TensorFlow, so configs validate before the framework starts. The builders load Keras
on first use.

>>> from setnet.models import build_classifier
>>> model = build_classifier({"num_classes": 4, "blocks": [{"kind": "linear", "units": 16}], "head": [16]})
>>> sorted(model.input)
['mask', 'points']
"""

from setnet.models.config import BLOCKS, Block, FoldedBlock, LinearBlock, ModelConfig, QuadraticBlock

__all__ = ["BLOCKS", "Block", "FoldedBlock", "LinearBlock", "ModelConfig", "QuadraticBlock", "build_classifier",
           "build_pointnet", "build_regressor"]


def __getattr__(name):
    # Keras loads only when a model is built, not when a config is read.
    if name in ("build_classifier", "build_regressor"):
        from setnet.models import classifier

        return getattr(classifier, name)
    if name == "build_pointnet":
        from setnet.models.pointnet import build_pointnet

        return build_pointnet
    raise AttributeError(f"module 'setnet.models' has no attribute {name!r}")
