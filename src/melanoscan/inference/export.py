"""ONNX export of a bundle: the same weights for onnxruntime, checked against torch.

The ONNX model has two outputs: ``logits`` and ``features`` (the globally pooled last feature
map, which the dermoscopy gate reads). The export records the SHA-256 of the ``weights.pt`` it
was made from, so that prediction never runs an export of other weights
(:func:`melanoscan.bundle.onnx_state`).
"""

from __future__ import annotations

import shutil
import warnings
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from melanoscan.bundle import (
    ONNX_FILE,
    installed_versions,
    load_bundle,
    weights_sha256,
    write_metadata,
)
from melanoscan.models.features import LogitsAndFeatures

__all__ = ["OPSET", "export_onnx"]

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
