"""``melanoscan export --int8`` and ``--half-weights``, the ``onnx-int8`` backend and half-precision
weights, on the tiny trained bundle (seconds; no shared data)."""

from __future__ import annotations

import shutil
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from melanoscan.bundle import (
    INT8_EXPORT,
    BundleError,
    calibration_state,
    halve_weights,
    int8_state,
    load_bundle,
    read_metadata,
    save_bundle,
    weights_sha256,
    write_metadata,
)
from melanoscan.cli import app
from melanoscan.inference import parity, quantize
from melanoscan.inference.export import export_int8
from melanoscan.inference.predictor import Predictor
from tests.conftest import lesion_image
from tests.test_cli_errors import flat, one_line_error

runner = CliRunner()


@pytest.fixture(scope="module")
def parity_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Labelled images, melanoma and nevus, for the parity check."""
    root = tmp_path_factory.mktemp("parity")
    for c, name in enumerate(("nevus", "melanoma")):
        for i in range(6):
            path = root / name / f"{name}{i}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            lesion_image(100 * c + i, 48).save(path)
    return root


@pytest.fixture
def lenient_gate(monkeypatch: pytest.MonkeyPatch) -> None:
    """A parity gate every quantisation passes: the tiny model's decisions are near ties."""
    monkeypatch.setattr(parity, "MIN_TOP1_AGREEMENT", 0.0)
    monkeypatch.setattr(parity, "MIN_ALERT_AGREEMENT", 0.0)
    monkeypatch.setattr(parity, "MAX_AUC_DIFFERENCE", 1.0)


@pytest.fixture(scope="module")
def int8_bundle(
    tiny_run: tuple[Path, Path], gated_bundle: Path, parity_data: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Path]:
    """The tiny bundle, with a gate, and a model.int8.onnx that passed (a lenient) parity
    check."""
    bundle = tmp_path_factory.mktemp("int8") / "bundle"
    shutil.copytree(gated_bundle, bundle)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(parity, "MIN_TOP1_AGREEMENT", 0.0)
        patch.setattr(parity, "MIN_ALERT_AGREEMENT", 0.0)
        patch.setattr(parity, "MAX_AUC_DIFFERENCE", 1.0)
        done = export_int8(bundle, sources=[tiny_run[1]], parity_data=[parity_data])
    assert done.written, done.reasons
    yield bundle


def _copy(bundle: Path, target: Path) -> Path:
    shutil.copytree(bundle, target)
    return target


def test_export_int8_writes_the_model_and_its_parity_record(
    tiny_run: tuple[Path, Path], parity_data: Path, tmp_path: Path, lenient_gate: None
) -> None:
    bundle = _copy(tiny_run[0], tmp_path / "bundle")
    result = runner.invoke(app, ["export", "--model", str(bundle), "--int8", "--data",
                                 str(tiny_run[1]), "--parity-data", str(parity_data)])
    assert result.exit_code == 0, result.output
    assert flat("int8 model written") in flat(result.output)
    assert (bundle / "model.int8.onnx").is_file()
    assert not (bundle / "model.onnx").exists()  # the fp32 model was made aside, not kept
    metadata = read_metadata(bundle)
    record = metadata.exports[INT8_EXPORT]
    assert record["parity"]["passed"] and record["parity"]["images"] == 12
    assert record["weights_sha256"] == weights_sha256(bundle)
    assert record["settings"]["keep_float"] == list(quantize.QuantizationSettings().keep_float)
    assert int8_state(bundle, metadata) == "current"


def test_export_int8_refuses_a_model_that_fails_parity(
    tiny_run: tuple[Path, Path], parity_data: Path, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(parity, "MIN_TOP1_AGREEMENT", 1.01)  # impossible
    bundle = _copy(tiny_run[0], tmp_path / "bundle")
    before = (bundle / "bundle.json").read_text()
    result = runner.invoke(app, ["export", "--model", str(bundle), "--int8", "--data",
                                 str(tiny_run[1]), "--parity-data", str(parity_data)])
    assert result.exit_code == 1, result.output
    assert "parity check failed: top-1 agreement" in " ".join(result.stderr.split())
    assert "below 101%" in result.stderr
    assert "Nothing written" in result.stderr
    assert not (bundle / "model.int8.onnx").exists()
    assert (bundle / "bundle.json").read_text() == before


def test_auto_picks_int8_only_with_a_passing_current_record(
    int8_bundle: Path, tmp_path: Path
) -> None:
    assert Predictor(int8_bundle).backend == "onnx-int8"
    int8 = Predictor(int8_bundle, backend="onnx-int8")
    assert int8.gate is not None  # the int8 model gives the gate its features
    reference = Predictor(int8_bundle, backend="torch")
    images = [lesion_image(seed, 48) for seed in range(4)]
    assert np.abs(int8.probabilities(images) - reference.probabilities(images)).max() < 0.1

    failed = _copy(int8_bundle, tmp_path / "failed")
    metadata = read_metadata(failed)
    metadata.exports[INT8_EXPORT]["parity"]["passed"] = False
    write_metadata(failed, metadata)
    assert Predictor(failed).backend == "torch"
    with pytest.raises(BundleError, match="has no int8 model that passed"):
        Predictor(failed, backend="onnx-int8")

    recalibrated = _copy(int8_bundle, tmp_path / "recalibrated")
    metadata = read_metadata(recalibrated)
    metadata.calibration["alert_threshold"] = 0.123  # checked against another threshold
    write_metadata(recalibrated, metadata)
    with pytest.warns(UserWarning, match="other weights or another calibration"):
        assert Predictor(recalibrated).backend == "torch"
    with pytest.raises(BundleError, match="melanoscan export --int8"):
        Predictor(recalibrated, backend="onnx-int8")

    swapped = _copy(int8_bundle, tmp_path / "swapped")
    (swapped / "model.int8.onnx").write_bytes(b"not the checked model")
    assert int8_state(swapped, read_metadata(swapped)) == "stale"


def test_new_weights_drop_the_int8_model(int8_bundle: Path, tmp_path: Path) -> None:
    copy = _copy(int8_bundle, tmp_path / "bundle")
    model = load_bundle(copy).model
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.5)
    save_bundle(copy, model, read_metadata(copy))
    assert not (copy / "model.int8.onnx").exists()
    assert INT8_EXPORT not in read_metadata(copy).exports
    assert calibration_state(copy, read_metadata(copy)) == "stale"


def test_int8_backend_without_the_model_is_a_one_line_error(
    tmp_path: Path, tiny_bundle: Path
) -> None:
    from tests.conftest import random_image

    images = tmp_path / "images"
    for c, name in enumerate(("nevus", "melanoma")):
        (images / name).mkdir(parents=True)
        random_image(c, (40, 36)).save(images / name / f"{name}.png")
    for command in (["predict", str(images), "-q"],
                    ["evaluate", "--data", str(images), "-q"],
                    ["calibrate", "--data", str(images), "-q"]):
        result = runner.invoke(app, [*command, "--model", str(tiny_bundle),
                                     "--backend", "onnx-int8"])
        one_line_error(result, "has no int8 model", "melanoscan export --int8")


def test_half_weights_round_trip_and_flag_what_was_fitted(
    int8_bundle: Path, tmp_path: Path
) -> None:
    copy = _copy(int8_bundle, tmp_path / "bundle")
    before = load_bundle(copy).model.state_dict()
    assert calibration_state(copy, read_metadata(copy)) == "current"
    done = halve_weights(copy)
    assert done.converted > 0 and done.bytes_after < 0.6 * done.bytes_before
    assert done.removed == ["model.int8.onnx"]
    stored = torch.load(copy / "weights.pt", weights_only=True)
    assert {v.dtype for v in stored.values() if v.is_floating_point()} == {torch.float16}
    after = load_bundle(copy).model.state_dict()
    for name, value in before.items():
        assert after[name].dtype == value.dtype  # back in float32
        if value.is_floating_point():
            torch.testing.assert_close(after[name], value.half().float())
    metadata = read_metadata(copy)
    assert INT8_EXPORT not in metadata.exports
    assert calibration_state(copy, metadata) == "stale"
    assert any("melanoscan calibrate --model" in line for line in done.stale)
    assert any("--gate-only" in line for line in done.stale)
    with pytest.warns(UserWarning, match="fitted for other weights"):
        Predictor(copy)
    assert halve_weights(copy).converted == 0  # already half precision
    with pytest.raises(BundleError, match="melanoscan calibrate"):
        export_int8(copy)  # the parity check would use a stale alert threshold


def test_fp32_weights_still_load(tiny_bundle: Path) -> None:
    stored = torch.load(tiny_bundle / "weights.pt", weights_only=True)
    assert torch.float32 in {v.dtype for v in stored.values()}
    model = load_bundle(tiny_bundle).model
    assert all(p.dtype == torch.float32 for p in model.parameters())


def test_export_half_weights_says_what_to_redo(int8_bundle: Path, tmp_path: Path) -> None:
    copy = _copy(int8_bundle, tmp_path / "bundle")
    result = runner.invoke(app, ["export", "--model", str(copy), "--half-weights"])
    assert result.exit_code == 0, result.output
    said = flat(result.output + result.stderr)
    assert flat("weights.pt in half precision") in said
    assert flat("Removed model.int8.onnx") in said
    assert flat(f"melanoscan calibrate --model {copy}") in said
    assert flat(f"melanoscan export --int8 --model {copy}") in said
    result = runner.invoke(app, ["export", "--model", str(copy), "--int8", "--half-weights"])
    one_line_error(result, "--half-weights changes the weights")


def test_stale_calibration_stops_export_int8(int8_bundle: Path, tmp_path: Path) -> None:
    copy = _copy(int8_bundle, tmp_path / "bundle")
    halve_weights(copy)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = runner.invoke(app, ["export", "--model", str(copy), "--int8"])
    one_line_error(result, "fitted for other weights", "melanoscan calibrate")
