"""Grad-CAM: map shape and range, no side effects on the model, overlays and bundle explanations."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw
from torch import Tensor, nn

from melanoscan import taxonomy
from melanoscan.bundle import BundleMetadata, load_bundle, save_bundle
from melanoscan.inference.gradcam import Explanation, explain, grad_cam, overlay
from melanoscan.inference.predictor import Predictor
from melanoscan.models import create_model, get_model_spec
from melanoscan.preprocess import Preprocessing
from tests.conftest import random_image

SKIN = (170, 150, 140)
# (name, input side, constructor kwargs)
MODELS = {
    "assignment_cnn": ("assignment_cnn", 32, {"input_size": 32}),
    "efficientnet_lite0": ("efficientnet_lite0", 64, {}),
}


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> Iterator[None]:
    # Tiny convolutions gain nothing from threads, and on a busy machine the thread pool's
    # synchronisation makes each EfficientNet pass ~100x slower.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _blank(size: int) -> Image.Image:
    return Image.new("RGB", (size, size), SKIN)


def _lesion(size: int) -> Image.Image:
    """Skin-coloured background with a dark disc centred at (0.3, 0.35) of the image."""
    image = _blank(size)
    radius, cx, cy = size // 5, size * 0.3, size * 0.35
    ImageDraw.Draw(image).ellipse((cx - radius, cy - radius, cx + radius, cy + radius),
                                  fill=(60, 40, 30))
    return image


def _inputs(name: str, image: Image.Image) -> Tensor:
    return torch.from_numpy(Preprocessing.for_model(name, image.width)(image)).unsqueeze(0)


@pytest.fixture(scope="module", params=list(MODELS))
def model_case(request: pytest.FixtureRequest) -> tuple[str, int, nn.Module]:
    name, size, kwargs = MODELS[request.param]
    torch.manual_seed(0)
    return name, size, create_model(name, 9, **kwargs).eval()


class DarknessNet(nn.Module):
    """Feature map = darkness of each pixel; logit 0 pools it, logit 1 pools its negative."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Conv2d(3, 1, kernel_size=1)
        self.head = nn.Linear(1, 2, bias=False)
        with torch.no_grad():
            self.features.weight.fill_(-1.0 / 3.0)
            self.features.bias.fill_(255.0)
            self.head.weight.copy_(torch.tensor([[1.0], [-1.0]]))

    def forward(self, x: Tensor) -> Tensor:
        pooled: Tensor = self.features(x).mean(dim=(2, 3))
        return self.head(pooled)


def test_map_shape_range_and_dtype(model_case: tuple[str, int, nn.Module]) -> None:
    name, size, model = model_case
    heatmap = grad_cam(model, _inputs(name, random_image(1, (size, size))), target=3)
    assert heatmap.shape == (size, size)
    assert heatmap.dtype == np.float32
    assert heatmap.min() >= 0.0
    # Scaled to a peak of 1, unless the class has no positive evidence at all.
    assert heatmap.max() == pytest.approx(1.0) or not heatmap.any()


def test_no_side_effects_on_the_model(model_case: tuple[str, int, nn.Module]) -> None:
    name, size, model = model_case
    layer = model.get_submodule(get_model_spec(name).feature_layer)
    first = next(model.parameters())
    model.train()
    last_child = list(model.children())[-1]
    last_child.eval()
    first.requires_grad_(False)
    try:
        grad_cam(model, _inputs(name, random_image(2, (size, size))), target=0)
        assert model.training and not last_child.training
        assert not first.requires_grad
        assert all(p.requires_grad for p in list(model.parameters())[1:])
        assert all(p.grad is None for p in model.parameters())
        for module in (model, layer):
            assert not module._forward_hooks
            assert not module._forward_pre_hooks
            assert not module._backward_hooks
    finally:
        first.requires_grad_(True)
        model.eval()


def test_map_responds_to_the_lesion(model_case: tuple[str, int, nn.Module]) -> None:
    name, size, model = model_case
    lesion = _inputs(name, _lesion(size))
    with torch.no_grad():
        target = int(model(lesion).argmax())
    blank_map = grad_cam(model, _inputs(name, _blank(size)), target)
    lesion_map = grad_cam(model, lesion, target)
    assert np.abs(blank_map - lesion_map).max() > 0.1


def test_known_answer_highlights_the_dark_disc() -> None:
    size = 40
    inputs = _inputs("assignment_cnn", _lesion(size))  # 0..255 pixels, no normalisation
    heatmap = grad_cam(DarknessNet(), inputs, target=0, layer="features")
    ys, xs = np.nonzero(heatmap > 0.9)
    assert xs.mean() == pytest.approx(0.3 * size, abs=1.5)
    assert ys.mean() == pytest.approx(0.35 * size, abs=1.5)
    assert heatmap[-1, -1] < 0.6
    # The opposite class has only negative evidence, which Grad-CAM's ReLU drops.
    assert not grad_cam(DarknessNet(), inputs, target=1, layer="features").any()
    # A network the registry does not know has no default layer.
    with pytest.raises(ValueError, match="DarknessNet is not a registered network; pass layer="):
        grad_cam(DarknessNet(), inputs, target=0)


def test_other_layer_and_bad_arguments() -> None:
    torch.manual_seed(0)
    model = create_model("assignment_cnn", 9, input_size=32).eval()
    inputs = _inputs("assignment_cnn", random_image(3, (32, 32)))
    assert grad_cam(model, inputs, target=1, layer="convs.0").shape == (32, 32)
    with pytest.raises(ValueError, match=r"target must be in \[0, 9\)"):
        grad_cam(model, inputs, target=9)
    with pytest.raises(ValueError, match="one image"):
        grad_cam(model, inputs[0], target=0)
    assert not model.get_submodule("convs.2")._forward_hooks


@pytest.mark.parametrize("context", [torch.inference_mode, torch.no_grad])
def test_works_inside_inference_mode(context) -> None:
    torch.manual_seed(0)
    model = create_model("assignment_cnn", 9, input_size=32).eval()
    expected = grad_cam(model, _inputs("assignment_cnn", _lesion(32)), target=2)
    with context():
        inputs = _inputs("assignment_cnn", _lesion(32)) + 0  # an inference tensor in that mode
        heatmap = grad_cam(model, inputs, target=2)
    np.testing.assert_allclose(heatmap, expected, atol=1e-6)


def test_overlay_blends_where_heat_is_high() -> None:
    pixels = np.full((16, 16, 3), 128, dtype=np.uint8)
    heatmap = np.zeros((4, 4), dtype=np.float32)
    heatmap[0, 0] = 1.0
    blended = overlay(pixels, heatmap)
    assert blended.shape == (16, 16, 3) and blended.dtype == np.uint8
    assert np.abs(blended[0, 0].astype(int) - 128).max() > 20
    assert not np.array_equal(blended[0, 0], blended[-1, -1])
    np.testing.assert_array_equal(overlay(pixels, heatmap, alpha=0.0), pixels)
    with pytest.raises(ValueError, match="uint8"):
        overlay(pixels.astype(np.float32), heatmap)


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    recipe = Preprocessing.for_model("assignment_cnn", 32)
    metadata = BundleMetadata(
        name="tiny",
        classes=list(taxonomy.CLASSES),
        architecture={"name": "assignment_cnn", "kwargs": {"input_size": 32}},
        preprocessing=recipe.to_dict(),
    )
    model = create_model("assignment_cnn", len(taxonomy.CLASSES), input_size=32)
    return save_bundle(tmp_path_factory.mktemp("bundle") / "b", model, metadata)


def test_explain_predicted_and_named_class(bundle_dir: Path) -> None:
    bundle = load_bundle(bundle_dir)
    image = random_image(4, (48, 40))  # not square, not the model's size: resized as predicted
    probabilities = Predictor(bundle_dir).probabilities([image])[0]

    predicted = explain(bundle, image)
    assert predicted.target_class == bundle.classes[int(probabilities.argmax())]
    assert predicted.probability == pytest.approx(probabilities.max(), abs=1e-5)
    assert predicted.heatmap.shape == (32, 32) and predicted.heatmap.dtype == np.float32
    assert predicted.overlay.shape == (32, 32, 3) and predicted.overlay.dtype == np.uint8

    melanoma = explain(bundle, image, target="melanoma")
    assert melanoma.target_class == "melanoma"
    index = bundle.classes.index("melanoma")
    assert melanoma.probability == pytest.approx(probabilities[index], abs=1e-5)
    assert not bundle.model.training


def test_explain_unknown_class(bundle_dir: Path) -> None:
    with pytest.raises(ValueError, match="unknown class 'mole'; known: actinic_keratosis"):
        explain(load_bundle(bundle_dir), random_image(5), target="mole")


def test_explanation_save_writes_png(tmp_path: Path) -> None:
    pixels = np.arange(8 * 8 * 3, dtype=np.uint8).reshape(8, 8, 3)
    explanation = Explanation("nevus", 0.7, np.zeros((8, 8), np.float32), pixels)
    path = explanation.save(tmp_path / "out" / "cam.png")
    with Image.open(path) as saved:
        assert saved.format == "PNG"
        np.testing.assert_array_equal(np.asarray(saved.convert("RGB")), pixels)
