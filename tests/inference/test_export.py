"""ONNX export parity: EfficientNet-Lite as well as the small CNN, and the shipped model."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from melanoscan import taxonomy
from melanoscan.bundle import (
    BundleMetadata,
    default_bundle_path,
    int8_state,
    load_bundle,
    onnx_state,
    read_metadata,
    save_bundle,
)
from melanoscan.data.images import decode
from melanoscan.inference.backends import ON_DEMAND
from melanoscan.inference.export import export_onnx
from melanoscan.inference.predictor import Predictor
from melanoscan.models import create_model
from melanoscan.preprocess import Preprocessing
from tests.conftest import lesion_image

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _outputs(predictor: Predictor, images: list) -> tuple[np.ndarray, np.ndarray]:
    pixels = np.stack([predictor.preprocessing.resize(image) for image in images])
    logits, features = predictor._run(predictor.preprocessing.normalise(pixels))
    assert features is not None
    return logits, features


@pytest.mark.slow
def test_efficientnet_lite_exports_with_parity(tmp_path: Path) -> None:
    torch.manual_seed(0)
    recipe = Preprocessing.for_model("efficientnet_lite0", 64)
    model = create_model("efficientnet_lite0", len(taxonomy.CLASSES)).eval()
    metadata = BundleMetadata(
        name="lite0-random", classes=list(taxonomy.CLASSES),
        architecture={"name": "efficientnet_lite0", "kwargs": {}},
        preprocessing=recipe.to_dict(),
    )
    save_bundle(tmp_path / "b", model, metadata,
                training_images=pd.DataFrame({"content_hash": ["a"], "label": ["nevus"],
                                              "split": ["train"]}))
    # A bundle without the size argument is built for its preprocessing's image size.
    assert load_bundle(tmp_path / "b").model.input_size == (64, 64)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        export_onnx(tmp_path / "b")
    # SAME padding is fixed at construction: tracing meets no shape arithmetic, and nothing
    # else warns either.
    assert not [w for w in caught if issubclass(w.category, torch.jit.TracerWarning)]
    assert not caught, [f"{w.category.__name__}: {w.message}" for w in caught]
    record = read_metadata(tmp_path / "b").exports["onnx"]
    assert record["max_abs_logit_difference_vs_torch"] < 1e-4
    assert onnx_state(tmp_path / "b", read_metadata(tmp_path / "b")) == "current"
    images = [lesion_image(seed, 80) for seed in range(4)]
    onnx = _outputs(Predictor(tmp_path / "b", backend="onnx"), images)
    eager = _outputs(Predictor(tmp_path / "b", backend="torch"), images)
    for exported, reference in zip(onnx, eager, strict=True):
        np.testing.assert_allclose(exported, reference, atol=1e-4, rtol=1e-4)


@pytest.mark.slow
def test_shipped_onnx_is_the_shipped_weights(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    shipped = default_bundle_path()
    metadata = read_metadata(shipped)
    if onnx_state(shipped, metadata) == "absent":
        # Shipped without it (to stay small): auto exports it once, into the user cache.
        monkeypatch.setenv("MELANOSCAN_CACHE_DIR", str(tmp_path))
        assert metadata.exports.get(ON_DEMAND), "no ONNX model and none made on demand"
        with pytest.warns(UserWarning, match="exporting it once"):
            onnx = Predictor()
    else:
        onnx = Predictor(backend="onnx")
        assert onnx_state(onnx.path, onnx.metadata) == "current"
    assert onnx.backend == "onnx"
    images = [lesion_image(0, 224)] + [
        decode(path).image for path in sorted(EXAMPLES.rglob("*.jpg"))[:4]]
    exported = _outputs(onnx, images)
    reference = _outputs(Predictor(backend="torch"), images)
    for got, expected in zip(exported, reference, strict=True):
        np.testing.assert_allclose(got, expected, atol=1e-3, rtol=1e-3)


@pytest.mark.slow
def test_shipped_int8_model_is_current_and_close() -> None:
    shipped = default_bundle_path()
    if int8_state(shipped, read_metadata(shipped)) == "absent":
        pytest.skip("the shipped bundle has no int8 model (melanoscan export --int8 makes it)")
    int8 = Predictor(backend="onnx-int8")
    assert Predictor().backend == "onnx-int8"
    assert int8.metadata.exports["onnx_int8"]["parity"]["passed"]
    images = [decode(path).image for path in sorted(EXAMPLES.rglob("*.jpg"))[:4]]
    quantised = int8.probabilities(images)
    reference = Predictor(backend="torch").probabilities(images)
    assert np.abs(quantised - reference).max() < 0.1
