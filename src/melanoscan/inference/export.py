"""ONNX export of a bundle: the same weights for onnxruntime, checked against torch; and its
int8 quantisation, kept only when it passes the parity gate (:func:`export_int8`).

The ONNX model has two outputs: ``logits`` and ``features`` (the globally pooled last feature
map, which the dermoscopy gate reads). The export records the SHA-256 of the ``weights.pt`` it
was made from, so that prediction never runs an export of other weights
(:func:`melanoscan.bundle.onnx_state`).
"""

from __future__ import annotations

import shutil
import tempfile
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from melanoscan.bundle import (
    INT8_EXPORT,
    INT8_ONNX_FILE,
    ONNX_FILE,
    WEIGHTS_FILE,
    BundleError,
    atomic_write,
    calibration_state,
    file_sha256,
    installed_versions,
    load_bundle,
    onnx_path,
    onnx_state,
    read_metadata,
    weights_sha256,
    write_metadata,
)
from melanoscan.calibration import DEFAULT_ALERT_THRESHOLD
from melanoscan.inference.quantize import QuantizationSettings
from melanoscan.models.features import LogitsAndFeatures

__all__ = ["OPSET", "Int8Export", "export_int8", "export_onnx"]

OPSET = 17


def export_onnx(bundle_dir: Path, output_dir: Path | None = None) -> Path:
    """Write ``model.onnx`` (dynamic batch) next to a copy of the bundle; return the bundle dir.

    Static SAME padding is folded into the graph, and the export is checked before it is
    recorded: onnxruntime and torch logits and features on a random batch must agree to 1e-4.

    Args:
        bundle_dir: the bundle to export.
        output_dir: where the exported bundle goes (``None``: into ``bundle_dir`` itself).
    """
    import onnxruntime as ort
    import torch

    from melanoscan.inference.onnx_graph import fold_static_padding

    bundle_dir = Path(bundle_dir)
    target = Path(output_dir) if output_dir is not None else bundle_dir
    if target.resolve() != bundle_dir.resolve():
        shutil.copytree(bundle_dir, target, dirs_exist_ok=True)
    bundle = load_bundle(target)
    size = bundle.preprocessing.image_size
    example = torch.zeros(2, 3, size, size)
    onnx_path = target / ONNX_FILE
    with warnings.catch_warnings():
        # Opset 11+ writes a fixed padding's pads with a reversing Slice that the exporter
        # cannot constant-fold; fold_static_padding folds them below.
        warnings.filterwarnings("ignore", "Constant folding - Only steps=1", UserWarning)
        # The TorchScript exporter is deprecated in favour of torch.export, which needs the
        # onnxscript package; this one exports our models exactly (parity checked below).
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        torch.onnx.export(
            LogitsAndFeatures(bundle.model), (example,), str(onnx_path), input_names=["input"],
            output_names=["logits", "features"], opset_version=OPSET, dynamo=False,
            dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"},
                          "features": {0: "batch"}},
        )
    # The asymmetric SAME pads of the stride-2 convolutions are exported as Pad nodes; folded
    # into their Conv, onnxruntime and its quantiser see plain convolutions. Checked below.
    fold_static_padding(onnx_path, onnx_path)
    inputs = np.random.default_rng(0).normal(size=(3, 3, size, size)).astype(np.float32)
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    onnx_logits, onnx_features = session.run(["logits", "features"], {"input": inputs})
    torch_logits, torch_features = bundle.logits_and_features(inputs)
    difference = float(np.abs(onnx_logits - torch_logits).max())
    feature_difference = float(np.abs(onnx_features - torch_features).max())
    if max(difference, feature_difference) > 1e-4:
        onnx_path.unlink()
        raise RuntimeError(f"ONNX export disagrees with torch (max logit difference "
                           f"{difference}, max feature difference {feature_difference})")
    bundle.metadata.exports["onnx"] = {
        "file": ONNX_FILE, "opset": OPSET, "input": "input", "output": "logits",
        "outputs": ["logits", "features"],
        "max_abs_logit_difference_vs_torch": difference,
        "max_abs_feature_difference_vs_torch": feature_difference,
        "weights_sha256": weights_sha256(target),
        "exported": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    bundle.metadata.versions = installed_versions()  # the versions the parity was checked under
    write_metadata(target, bundle.metadata)
    return target


@dataclass(frozen=True)
class Int8Export:
    """What :func:`export_int8` did.

    Args:
        written: the int8 model passed its parity check and was written into the bundle.
        path: where it was (or would have been) written.
        report: the parity figures (:func:`melanoscan.inference.parity.parity_report`), with
            ``data`` (the images checked on).
        reasons: one line per parity criterion missed (empty when written).
    """

    written: bool
    path: Path
    report: dict[str, Any]
    reasons: list[str]


def export_int8(
    bundle_dir: Path,
    sources: Sequence[str | Path] | None = None,
    parity_data: Sequence[Path] | None = None,
    calibration_images: int = 300,
    parity_images: int | None = 1000,
    settings: QuantizationSettings | None = None,
) -> Int8Export:
    """Quantise a bundle's ONNX model to int8 and keep it only if it passes the parity gate.

    The fp32 ONNX export is used when the bundle has a current one, else made in a temporary
    folder (the bundle gets no ``model.onnx``). Calibration reads the bundle's training images;
    the parity check (:func:`melanoscan.inference.parity.passes`) compares fp32 and int8 on
    labelled images with the bundle's temperature and alert threshold. Only a passing model is
    written (``model.int8.onnx``), with its record in ``exports.onnx_int8`` (weights' SHA-256,
    settings, parity figures), which ``--backend auto`` requires before it picks the model.

    Args:
        bundle_dir: the bundle, amended in place.
        sources: where its training images are, to calibrate on (and, without
            ``parity_data``, its validation images to check on); ``None``: the sources the
            bundle records, relative to the working directory.
        parity_data: labelled data sources to check parity on (``None``: the bundle's
            validation images found in ``sources``).
        calibration_images: training images to calibrate on.
        parity_images: at most this many images to check on (``None``: all of ``parity_data``).
        settings: how to quantise (``None``: the defaults).

    Raises:
        BundleError: no weights, or a calibration fitted for other weights than the present
            ones (``melanoscan calibrate`` first).
        QuantizationError: no calibration or parity image found, or nothing quantised.
    """
    from melanoscan import taxonomy
    from melanoscan.inference.bundle_images import (
        calibration_inputs,
        labelled_inputs,
        validation_inputs,
    )
    from melanoscan.inference.parity import parity_report, passes
    from melanoscan.inference.quantize import quantize_int8

    bundle_dir = Path(bundle_dir)
    metadata = read_metadata(bundle_dir)
    if weights_sha256(bundle_dir) is None:
        raise BundleError(f"{bundle_dir} has no weights ({WEIGHTS_FILE} is missing)")
    if calibration_state(bundle_dir, metadata) == "stale":
        raise BundleError(
            f"{bundle_dir}: its temperature and alert threshold were fitted for other weights, "
            f"and the parity check uses them; first run: melanoscan calibrate --model "
            f"{bundle_dir} --data HELD_OUT_DATA")
    target = bundle_dir / INT8_ONNX_FILE
    with tempfile.TemporaryDirectory(prefix="melanoscan-int8-") as tmp:
        fp32 = onnx_path(bundle_dir, metadata)
        if onnx_state(bundle_dir, metadata) not in ("current", "unknown"):
            exported = export_onnx(bundle_dir, Path(tmp) / "bundle")
            fp32 = onnx_path(exported, read_metadata(exported))
        calibration = calibration_inputs(bundle_dir, calibration_images, sources=sources)
        quantised = quantize_int8(fp32, Path(tmp) / INT8_ONNX_FILE, calibration, settings)
        if parity_data:
            arrays = [labelled_inputs(bundle_dir, data) for data in parity_data]
            inputs = np.concatenate([a for a, _ in arrays])[:parity_images]
            melanoma = np.concatenate([m for _, m in arrays])[:parity_images]
            checked_on = ", ".join(map(str, parity_data))
        else:
            inputs, melanoma = validation_inputs(bundle_dir, parity_images or 1000,
                                                 sources=sources)
            checked_on = f"validation images of the bundle ({len(inputs)} found)"
        calibration_record = metadata.calibration
        report = parity_report(
            fp32, quantised, inputs, melanoma,
            float(calibration_record.get("temperature") or 1.0),
            float(calibration_record.get("alert_threshold") or DEFAULT_ALERT_THRESHOLD),
            metadata.classes.index(taxonomy.MELANOMA),
        )
        report["data"] = checked_on
        verdict = passes(report)
        if not verdict:
            return Int8Export(False, target, report, list(verdict.reasons))
        atomic_write(target, lambda path: shutil.copyfile(quantised, path))
    metadata.exports[INT8_EXPORT] = {
        "file": INT8_ONNX_FILE,
        "sha256": file_sha256(target),
        "weights_sha256": weights_sha256(bundle_dir),
        "settings": (settings or QuantizationSettings()).to_dict(),
        "calibration_images": len(calibration),
        "parity": {**report, "passed": True},
        "onnxruntime": installed_versions().get("onnxruntime"),
        "exported": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    write_metadata(bundle_dir, metadata)
    return Int8Export(True, target, report, [])
