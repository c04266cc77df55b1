"""EfficientNet-Lite: logits against the reference implementation and the strict weight mapping."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
import torch
from torch import Tensor

from melanoscan.models import EfficientNetLite, WeightMappingError, create_model
from melanoscan.models.efficientnet_lite import PRETRAINED_MEAN, PRETRAINED_STD
from melanoscan.models.pretrained import (
    load_reference_state_dict,
    pretrained_weights_path,
    reference_key,
)


@pytest.fixture(scope="module")
def source_state_dict() -> dict[str, Tensor]:
    state_dict: dict[str, Tensor] = torch.load(
        pretrained_weights_path("lite0"), map_location="cpu", weights_only=True
    )
    return state_dict


@pytest.fixture(scope="module")
def pretrained_lite0() -> Iterator[torch.nn.Module]:
    yield create_model("efficientnet_lite0", num_classes=1000, pretrained=True).eval()


def test_logits_match_reference_implementation(pretrained_lite0: torch.nn.Module) -> None:
    reference_lib = pytest.importorskip("efficientnet_lite_pytorch")
    reference = reference_lib.EfficientNet.from_pretrained(
        "efficientnet-lite0", weights_path=str(pretrained_weights_path("lite0"))
    ).eval()
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))

    with torch.no_grad():
        expected = reference(x)
        actual = pretrained_lite0(x)

    assert actual.shape == (1, 1000)
    assert (actual - expected).abs().max().item() < 1e-4
    assert actual.argmax().item() == expected.argmax().item()


def test_features_and_feature_layer(pretrained_lite0: torch.nn.Module) -> None:
    assert isinstance(pretrained_lite0, EfficientNetLite)
    captured: list[Tensor] = []
    layer = pretrained_lite0.get_submodule(pretrained_lite0.feature_layer)
    handle = layer.register_forward_hook(lambda _m, _i, out: captured.append(out))
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        features = pretrained_lite0.features(x)
    handle.remove()

    assert features.shape == (1, pretrained_lite0.num_features, 7, 7)
    assert torch.equal(captured[0], features)


def test_mapping_covers_every_key(source_state_dict: dict[str, Tensor]) -> None:
    targets = EfficientNetLite("lite0").state_dict()
    assert sorted(reference_key(k) for k in targets) == sorted(source_state_dict)


@pytest.mark.parametrize(
    ("corrupt", "message"),
    [
        (lambda sd: sd.pop("_blocks.3._bn1.running_var"), "_blocks.3._bn1.running_var"),
        (lambda sd: sd.update({"_blocks.3._se_reduce.weight": torch.zeros(1)}), "_se_reduce"),
        (lambda sd: sd.update({"_conv_stem.weight": torch.zeros(32, 3, 5, 5)}), "shape mismatch"),
        (lambda sd: sd.pop("_fc.bias"), "_fc.bias"),
    ],
    ids=["missing", "unexpected", "shape", "missing-classifier"],
)
def test_strict_mapping_rejects_corrupted_state_dict(
    source_state_dict: dict[str, Tensor],
    corrupt: Callable[[dict[str, Tensor]], object],
    message: str,
) -> None:
    state_dict = dict(source_state_dict)
    corrupt(state_dict)
    with pytest.raises(WeightMappingError, match=message):
        load_reference_state_dict(EfficientNetLite("lite0"), state_dict)


def test_strict_mapping_rejects_other_variant(source_state_dict: dict[str, Tensor]) -> None:
    with pytest.raises(WeightMappingError, match="EfficientNet-lite2"):
        load_reference_state_dict(EfficientNetLite("lite2"), source_state_dict)


def test_unknown_module_has_no_reference_key() -> None:
    with pytest.raises(WeightMappingError, match="no reference key"):
        reference_key("blocks.0.attention.weight")


def test_nine_classes_loads_backbone_and_trains(source_state_dict: dict[str, Tensor]) -> None:
    torch.manual_seed(0)
    model = create_model("efficientnet_lite0", num_classes=9, pretrained=True)
    state = model.state_dict()

    assert torch.equal(state["stem.conv.weight"], source_state_dict["_conv_stem.weight"])
    assert torch.equal(state["head.bn.running_var"], source_state_dict["_bn1.running_var"])
    assert state["classifier.weight"].shape == (9, 1280)

    x = torch.randn(2, 3, 64, 64)
    logits = model(x)
    assert logits.shape == (2, 9)
    loss = torch.nn.functional.cross_entropy(logits, torch.tensor([0, 8]))
    torch.autograd.backward(loss)
    params = dict(model.named_parameters())
    for name in ("classifier.weight", "stem.conv.weight"):
        grad = params[name].grad
        assert grad is not None
        assert torch.isfinite(grad).all()
        assert grad.abs().sum() > 0


def test_pretrained_normalisation_is_127_128() -> None:
    pixels = torch.tensor([0.0, 127.0, 255.0])
    for mean, std in zip(PRETRAINED_MEAN, PRETRAINED_STD, strict=True):
        normalised = (pixels / 255.0 - mean) / std
        torch.testing.assert_close(normalised, (pixels - 127.0) / 128.0)
