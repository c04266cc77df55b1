"""EfficientNet-Lite: logits against the reference implementation, static SAME padding and the
strict weight mapping."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from melanoscan.models import EfficientNetLite, WeightMappingError, create_model, get_model_spec
from melanoscan.models.efficientnet_lite import (
    PRETRAINED_MEAN,
    PRETRAINED_STD,
    Conv2dSame,
    same_padding,
)
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
    layer = pretrained_lite0.get_submodule(get_model_spec("efficientnet_lite0").feature_layer)
    handle = layer.register_forward_hook(lambda _m, _i, out: captured.append(out))
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        features = pretrained_lite0.forward_features(x)
    handle.remove()

    assert features.shape == (1, pretrained_lite0.num_features, 7, 7)
    assert torch.equal(captured[0], features)


def _dynamic_same(module: nn.Module, args: tuple[Tensor, ...], _output: Tensor) -> Tensor:
    """The convolution with TF "SAME" padding computed from the input, as TensorFlow does."""
    assert isinstance(module, Conv2dSame)
    (x,) = args
    pads: list[int] = []
    for size, k, s in zip(x.shape[:-3:-1], module.kernel_size[::-1], module.stride[::-1],
                          strict=True):
        total = max((math.ceil(size / s) - 1) * s + k - size, 0)
        pads += [total // 2, total - total // 2]
    return F.conv2d(F.pad(x, pads), module.weight, None, module.stride, 0, module.dilation,
                    module.groups)


@pytest.mark.parametrize(("built_for", "size"), [(64, 64), (72, 72), (100, 100),
                                                 ((72, 100), (72, 100)), (224, 96)])
def test_static_padding_is_tensorflow_same(
    built_for: int | tuple[int, int], size: int | tuple[int, int]
) -> None:
    # 72 and 100 give odd sides (symmetric stride-2 padding) at some layers; 96 has the
    # parities of 224 at every layer, so a model built for 224 pads it exactly too.
    torch.manual_seed(0)
    model = EfficientNetLite("lite0", num_classes=9, input_size=built_for).eval()
    height, width = (size, size) if isinstance(size, int) else size
    x = torch.randn(1, 3, height, width, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        static = model(x)
        handles = [m.register_forward_hook(_dynamic_same) for m in model.modules()
                   if isinstance(m, Conv2dSame)]
        try:
            dynamic = model(x)
        finally:
            for handle in handles:
                handle.remove()
    torch.testing.assert_close(static, dynamic, rtol=1e-5, atol=1e-5)


def test_padding_is_fixed_at_construction() -> None:
    model = EfficientNetLite("lite0", num_classes=9)
    assert model.input_size == (224, 224)
    convs = [m for m in model.modules() if isinstance(m, Conv2dSame)]
    padded = [m for m in convs if m.same_pad is not None]
    # Only the five stride-2 convolutions pad asymmetrically; every other one pads itself.
    assert [m.stride for m in padded] == [(2, 2)] * 5
    assert [m.same_pad.padding for m in padded] == [  # type: ignore[union-attr]
        (0, 1, 0, 1), (0, 1, 0, 1), (1, 2, 1, 2), (0, 1, 0, 1), (1, 2, 1, 2)]
    assert all(m.padding == ((m.kernel_size[0] - 1) // 2,) * 2 for m in convs if m.same_pad is None)
    assert same_padding(15, 5, 2) == (2, 2) and same_padding(14, 5, 2) == (1, 2)
    with pytest.raises(ValueError, match="needs the input size"):
        Conv2dSame(8, 8, 3, stride=2)


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
