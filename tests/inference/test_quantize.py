"""Static int8 quantisation and the parity gate, on a tiny EfficientNet-like net (seconds)."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from melanoscan.bundle import BundleMetadata, write_metadata
from melanoscan.data.images import pixel_hash
from melanoscan.inference.bundle_images import (
    calibration_files,
    calibration_inputs,
    labelled_inputs,
)
from melanoscan.inference.onnx_graph import fold_static_padding
from melanoscan.inference.parity import (
    GateVerdict,
    onnx_session,
    parity_from_logits,
    parity_report,
    passes,
    run_onnx,
)
from melanoscan.inference.quantize import QuantizationError, QuantizationSettings, quantize_int8
from melanoscan.inference.weight_rounding import int8_grid, prepare_weights
from melanoscan.preprocess import Preprocessing
from tests.conftest import random_image

SIZE = 32
CLASSES = 9
MELANOMA = 3


class SamePadConv(nn.Conv2d):
    """TF "SAME" padding computed from the input shape, as in EfficientNet-Lite."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads: list[int] = []
        for size, k, s in zip(reversed(x.shape[-2:]), reversed(self.kernel_size),
                              reversed(self.stride), strict=True):
            total = max((-(-size // s) - 1) * s + k - size, 0)
            pads += [total // 2, total - total // 2]
        return super().forward(F.pad(x, pads))


class TinyNet(nn.Module):
    """Stem, a depthwise-separable block with a residual, ReLU6, pooling, linear head."""

    def __init__(self, features_output: bool = False) -> None:
        super().__init__()
        self.features_output = features_output
        self.stem = nn.Sequential(SamePadConv(3, 32, 3, stride=2, bias=False),
                                  nn.BatchNorm2d(32), nn.ReLU6())
        self.depthwise = nn.Sequential(nn.Conv2d(32, 32, 3, padding=1, groups=32, bias=False),
                                       nn.BatchNorm2d(32), nn.ReLU6())
        self.project = nn.Sequential(nn.Conv2d(32, 32, 1, bias=False), nn.BatchNorm2d(32))
        self.head = nn.Sequential(nn.Conv2d(32, 128, 1, bias=False), nn.BatchNorm2d(128),
                                  nn.ReLU6(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.classifier = nn.Linear(128, CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        x = self.stem(x)
        x = x + self.project(self.depthwise(x))
        features = self.head(x)
        logits = self.classifier(features)
        return (logits, features) if self.features_output else logits


def export_tiny(path: Path, features_output: bool = False, dynamic_size: bool = False) -> Path:
    torch.manual_seed(0)
    model = TinyNet(features_output)
    with torch.no_grad():  # non-trivial BatchNorm statistics, as in a trained model
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.5, 2.0)
    model.eval()
    outputs = ["logits", "features"] if features_output else ["logits"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model, (torch.zeros(2, 3, SIZE, SIZE),), str(path), input_names=["input"],
            output_names=outputs, opset_version=17, dynamo=False,
            dynamic_axes={"input": {0: "batch", 2: "h", 3: "w"} if dynamic_size else {0: "batch"},
                          **{name: {0: "batch"} for name in outputs}},
        )
    return path


def inputs(count: int, seed: int) -> np.ndarray:
    """Smooth random images in the model's input range (about [-1, 1])."""
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(-1, 1, size=(count, 3, SIZE // 4, SIZE // 4)).astype(np.float32)
    return np.ascontiguousarray(coarse.repeat(4, axis=2).repeat(4, axis=3))


@pytest.fixture(scope="module")
def fp32_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_tiny(tmp_path_factory.mktemp("fp32") / "model.onnx")


@pytest.fixture(scope="module")
def int8_model(fp32_model: Path) -> Path:
    return quantize_int8(fp32_model, fp32_model.with_name("model.int8.onnx"), inputs(64, 1))


def op_types(path: Path) -> set[str]:
    return {node.op_type for node in onnx.load(str(path)).graph.node}


def test_quantised_model_is_smaller_qdq_and_close(fp32_model: Path, int8_model: Path) -> None:
    assert int8_model.stat().st_size < 0.6 * fp32_model.stat().st_size
    assert {"QuantizeLinear", "DequantizeLinear"} <= op_types(int8_model)
    assert not {"Pad", "Shape"} & op_types(int8_model)  # static padding folded first
    batch = inputs(16, 2)
    reference = run_onnx(onnx_session(fp32_model, threads=1), batch)["logits"]
    quantised = run_onnx(onnx_session(int8_model, threads=1), batch)["logits"]
    assert quantised.shape == reference.shape == (16, CLASSES)
    assert quantised.dtype == np.float32
    assert np.abs(quantised - reference).max() < 0.1 * np.abs(reference).max()


def test_every_output_is_kept_and_quantised(tmp_path: Path) -> None:
    fp32 = export_tiny(tmp_path / "two.onnx", features_output=True)
    settings = QuantizationSettings(activation_type="int8", calibration="percentile")
    # single inputs and batches mixed, as a generator: all are accepted
    calibration = (item for item in [*inputs(5, 1), inputs(20, 3)])
    int8 = quantize_int8(fp32, tmp_path / "two.int8.onnx", calibration, settings, batch_size=8)
    batch = inputs(4, 2)
    reference = run_onnx(onnx_session(fp32), batch)
    quantised = run_onnx(onnx_session(int8), batch)
    assert list(quantised) == ["logits", "features"]
    graph = onnx.load(str(int8)).graph
    producers = {o: n.op_type for n in graph.node for o in n.output}
    assert {producers["logits"], producers["features"]} == {"Gemm", "Flatten"}  # float, not DQ
    for name in reference:
        assert quantised[name].shape == reference[name].shape
        assert np.abs(quantised[name] - reference[name]).max() < 0.1 * np.abs(
            reference[name]).max()


def test_fold_static_padding_keeps_outputs(fp32_model: Path, tmp_path: Path) -> None:
    folded = fold_static_padding(fp32_model, tmp_path / "folded.onnx")
    assert "Pad" in op_types(fp32_model)
    assert not {"Pad", "Shape", "Gather"} & op_types(folded)
    batch = inputs(3, 4)
    np.testing.assert_allclose(run_onnx(onnx_session(folded), batch)["logits"],
                               run_onnx(onnx_session(fp32_model), batch)["logits"], atol=1e-5)


def test_dynamic_image_size_keeps_its_padding(tmp_path: Path) -> None:
    dynamic = export_tiny(tmp_path / "dynamic.onnx", dynamic_size=True)
    folded = fold_static_padding(dynamic, tmp_path / "folded.onnx")
    assert "Pad" in op_types(folded)
    for size in (SIZE, SIZE + 5):
        batch = inputs(2, 4)[:, :, :1, :1].repeat(size, axis=2).repeat(size, axis=3)
        np.testing.assert_allclose(run_onnx(onnx_session(folded), batch)["logits"],
                                   run_onnx(onnx_session(dynamic), batch)["logits"], atol=1e-5)


def test_no_calibration_input_is_an_error(fp32_model: Path, tmp_path: Path) -> None:
    with pytest.raises(QuantizationError, match="no calibration"):
        quantize_int8(fp32_model, tmp_path / "x.onnx", [])
    with pytest.raises(ValueError, match="calibration must be"):
        QuantizationSettings(calibration="median")


def test_gate_passes_an_honest_quantisation(fp32_model: Path, int8_model: Path) -> None:
    batch = inputs(200, 5)
    logits = run_onnx(onnx_session(fp32_model), batch)["logits"]
    # labels that the fp32 model ranks well, so that the AUC is meaningful
    labels = logits[:, MELANOMA] > np.median(logits[:, MELANOMA])
    labels[:10] = ~labels[:10]
    threshold = float(np.quantile(_melanoma_probability(logits), 0.5))
    report = parity_report(fp32_model, int8_model, batch, labels, 1.0, threshold, MELANOMA)
    assert report["images"] == 200
    assert report["top1_agreement"] >= 0.95
    assert abs(report["auc_difference"]) < 0.02
    assert report["other_outputs"] == {}


def test_gate_fails_garbage_calibration(fp32_model: Path, tmp_path: Path) -> None:
    broken = quantize_int8(fp32_model, tmp_path / "broken.onnx",
                           np.zeros((8, 3, SIZE, SIZE), np.float32) + 1e-3)
    batch = inputs(200, 5)
    labels = np.arange(200) % 2 == 0
    report = parity_report(fp32_model, broken, batch, labels, 1.0, 0.1, MELANOMA)
    verdict = passes(report)
    assert not verdict
    assert any("top-1 agreement" in reason for reason in verdict.reasons)


def _melanoma_probability(logits: np.ndarray) -> np.ndarray:
    exp = np.exp(logits - logits.max(1, keepdims=True))
    return (exp / exp.sum(1, keepdims=True))[:, MELANOMA]


def synthetic(count: int = 1000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.random(count) < 0.2
    logits = rng.normal(size=(count, CLASSES))
    logits[:, MELANOMA] += 2.0 * labels
    return logits, labels


def test_parity_of_identical_logits_is_perfect() -> None:
    logits, labels = synthetic()
    report = parity_from_logits(logits, logits.copy(), labels, 0.8, 0.2, MELANOMA)
    assert report["top1_agreement"] == 1.0
    assert report["alert_agreement"] == 1.0
    assert report["auc_difference"] == 0.0
    assert report["max_abs_logit_difference"] == 0.0
    assert report["alerts_fp32"] == report["alerts_int8"] > 0
    assert passes(report) == GateVerdict(True, [])


def test_parity_counts_flipped_decisions() -> None:
    logits, labels = synthetic()
    changed = logits.copy()
    top = logits.argmax(1)
    rows = np.flatnonzero(top != 0)[:20]  # 2% of images change their top class
    changed[rows, 0] = logits[rows].max(1) + 1.0
    report = parity_from_logits(logits, changed, labels, 1.0, 0.2, MELANOMA)
    assert report["top1_agreement"] == pytest.approx(0.98)
    assert report["max_abs_logit_difference"] > 1.0
    verdict = passes(report)
    assert not verdict
    assert len(verdict.reasons) >= 1 and "top-1 agreement 98.00%" in verdict.reasons[0]


def test_parity_alert_and_auc_reasons() -> None:
    logits, labels = synthetic()
    temperature, threshold = 0.5, 0.3
    probability = _melanoma_probability(logits / temperature)
    # push the melanoma logit of the 5% of images nearest the threshold across it
    near = np.argsort(np.abs(probability - threshold))[:50]
    shifted = logits.copy()
    shifted[near, MELANOMA] += np.where(probability[near] >= threshold, -1.0, 1.0)
    # and blur the ranking: AUC drops
    shifted[:, MELANOMA] += np.random.default_rng(1).normal(scale=1.0, size=len(logits))
    report = parity_from_logits(logits, shifted, labels, temperature, threshold, MELANOMA)
    assert report["alert_agreement"] < 0.99
    assert report["auc_difference"] < -0.005
    reasons = passes(report).reasons
    assert any("melanoma AUC moves" in r for r in reasons)
    assert any("identical alert decision" in r for r in reasons)


def test_auc_needs_both_classes() -> None:
    logits, _ = synthetic(50)
    report = parity_from_logits(logits, logits, np.zeros(50, bool), 1.0, 0.5, MELANOMA)
    assert report["melanoma_auc_fp32"] is None and report["auc_difference"] is None
    assert any("cannot be compared" in r for r in passes(report).reasons)
    with pytest.raises(ValueError):
        parity_from_logits(logits, logits[:10], np.zeros(50, bool), 1.0, 0.5, MELANOMA)


def test_calibration_files_are_training_images(tmp_path: Path) -> None:
    data = tmp_path / "data"
    rows = []
    for c, folder in enumerate(["melanoma", "nevus", "dermatofibroma"]):
        for i in range(6):
            image = random_image(100 * c + i, size=(40, 30))
            path = data / folder / f"{folder}_{i}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            image.save(path)
            split = "val" if i == 0 else "train"
            rows.append(f"{pixel_hash(image)},{folder},{split}")
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "training_images.csv").write_text("content_hash,label,split\n" + "\n".join(rows))
    preprocessing = Preprocessing(image_size=16)
    write_metadata(bundle, BundleMetadata(
        name="t", classes=["melanoma", "nevus", "dermatofibroma"],
        architecture={"name": "x"}, preprocessing=preprocessing.to_dict(),
        training={"sources": [str(data)]}))
    files = calibration_files(bundle, count=7, seed=0)
    assert len(files) == len(set(files)) == 7
    assert all(not f.stem.endswith("_0") for f in files)  # validation images are not used
    assert {f.parent.name for f in files} == {"melanoma", "nevus", "dermatofibroma"}
    assert len(calibration_files(bundle, count=100)) == 15
    arrays = calibration_inputs(bundle, count=4)
    assert arrays.shape == (4, 3, 16, 16) and arrays.dtype == np.float32


def test_int8_grid_keeps_scale_and_kernel_sums() -> None:
    rng = np.random.default_rng(0)
    weight = rng.normal(size=(16, 4, 3, 3)).astype(np.float32)
    scale = np.abs(weight).reshape(16, -1).max(1) / 127
    exact = weight / scale[:, None, None, None]
    for preserve in (False, True):
        snapped = int8_grid(weight, preserve_sums=preserve)
        steps = snapped / scale[:, None, None, None]
        np.testing.assert_allclose(steps, np.round(steps), atol=1e-3)  # on the int8 grid
        assert np.abs(steps).max() <= 127 + 1e-3
        # each channel's largest weight is kept: onnxruntime recomputes the same scale
        np.testing.assert_allclose(np.abs(snapped).reshape(16, -1).max(1), scale * 127,
                                   rtol=1e-6)
        assert np.abs(steps - exact).max() <= (1.0 if preserve else 0.5) + 1e-3
    plain = int8_grid(weight, preserve_sums=False) / scale[:, None, None, None]
    kept = int8_grid(weight) / scale[:, None, None, None]
    plain_error = np.abs((plain - exact).sum(axis=(2, 3)))
    kept_error = np.abs((kept - exact).sum(axis=(2, 3)))
    assert kept_error.max() <= 0.5 + 1e-3 < plain_error.max()
    matrix = rng.normal(size=(9, 5)).astype(np.float32)  # no spatial taps: plain rounding
    np.testing.assert_array_equal(int8_grid(matrix), int8_grid(matrix, preserve_sums=False))


def test_bias_correction_removes_the_mean_shift(fp32_model: Path, tmp_path: Path) -> None:
    model = onnx.load(str(fold_static_padding(fp32_model, tmp_path / "folded.onnx")))
    batches = [inputs(32, 7), inputs(32, 8)]
    reference = run_onnx(onnx_session(tmp_path / "folded.onnx"), batches)["logits"]
    shifts = {}
    for correct in (False, True):
        prepared = prepare_weights(model, batches, bias_correction=correct)
        onnx.save(prepared, str(tmp_path / f"prepared_{correct}.onnx"))
        logits = run_onnx(onnx_session(tmp_path / f"prepared_{correct}.onnx"), batches)["logits"]
        shifts[correct] = float(np.abs((logits - reference).mean(axis=0)).mean())
    assert shifts[True] < 0.5 * shifts[False]


def test_labelled_inputs_mark_melanoma_and_skip_unreadable(tmp_path: Path) -> None:
    data = tmp_path / "data"
    for c, folder in enumerate(["melanoma", "nevus"]):
        for i in range(2):
            path = data / folder / f"{folder}_{i}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            random_image(10 * c + i, size=(30, 20)).save(path)
    (data / "nevus" / "nevus_9.png").write_bytes(b"not an image")
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    write_metadata(bundle, BundleMetadata(
        name="t", classes=["melanoma", "nevus"], architecture={"name": "x"},
        preprocessing=Preprocessing(image_size=16).to_dict()))
    arrays, melanoma = labelled_inputs(bundle, data)
    assert arrays.shape == (4, 3, 16, 16)
    assert melanoma.tolist() == [True, True, False, False]
    assert len(labelled_inputs(bundle, data, limit=3)[0]) == 3
