import keras
import pytest

from setnet.layers import SetNormalization
from setnet.models import ModelConfig, build_classifier
from setnet.models.pointnet import build_pointnet


def test_the_batch_norm_variant_differs_only_in_the_shared_layers_normalisation():
    by_kind = {kind: build_pointnet(4, normalization=kind) for kind in ("set", "batch")}
    norms = {kind: [model.get_layer(f"mlp{i}_norm") for i in range(5)] for kind, model in by_kind.items()}
    assert all(type(layer) is SetNormalization for layer in norms["set"])
    assert all(type(layer) is keras.layers.BatchNormalization for layer in norms["batch"])
    assert by_kind["set"].count_params() == by_kind["batch"].count_params()
    with pytest.raises(ValueError, match="normalization must be one of"):
        build_pointnet(4, normalization="layer")


def test_model_type_pointnet_bn_builds_the_published_network_with_keras_batch_normalization():
    bn = build_classifier(ModelConfig(type="pointnet_bn"), num_classes=4)
    sn = build_classifier(ModelConfig(type="pointnet"), num_classes=4)
    assert bn.name == "pointnet_bn" and sn.name == "pointnet"
    assert type(bn.get_layer("mlp4_norm")) is keras.layers.BatchNormalization
    assert type(sn.get_layer("mlp4_norm")) is SetNormalization
