"""Which backend runs a bundle's network, and its runner: onnxruntime or torch.

``auto`` takes the ONNX export when it was made from the bundle's current weights (and has the
gate's ``features`` output when a gate needs it) and onnxruntime is installed, else torch, with
a warning when an export exists but cannot be used.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from melanoscan.bundle import WEIGHTS_FILE, BundleError, BundleMetadata, onnx_path, onnx_state
from melanoscan.inference.engine import Runner

__all__ = ["BACKENDS", "open_runner"]

BACKENDS = ("auto", "onnx", "torch")


def open_runner(
    path: Path, metadata: BundleMetadata, requested: str, needs_features: bool
) -> tuple[str, Runner]:
    """The backend (``onnx`` or ``torch``) for ``requested`` and its runner.

    Args:
        path: the bundle directory.
        metadata: its metadata.
        requested: ``auto``, ``onnx`` or ``torch``.
        needs_features: the bundle has a gate, so the runner must give its features.

    Raises:
        BundleError: ``onnx`` was asked for but the export is missing, stale or has no
            ``features`` output a gate needs, or onnxruntime is not installed.
    """
    backend = requested
    onnx_file = onnx_path(path, metadata)
    export = f"run: melanoscan export --model {path}"
    state = onnx_state(path, metadata)
    if backend == "onnx" and state == "absent":
        raise BundleError(f"{path} has no ONNX export ({onnx_file.name} is missing); "
                          f"{export}, or use --backend torch")
    if state == "stale":
        message = (f"{onnx_file} was exported from other weights than {WEIGHTS_FILE} "
                   f"(they changed since); {export}")
        if requested == "onnx":
            raise BundleError(message)
        if requested == "auto":
            warnings.warn(f"{message}. Using torch meanwhile.", stacklevel=3)
            backend = "torch"
    if backend == "auto":
        backend = "onnx" if state != "absent" and _has_onnxruntime() else "torch"
    if backend == "onnx":
        if not _has_onnxruntime():
            raise BundleError("backend 'onnx' needs the onnxruntime package")
        run, has_features = _onnx_runner(onnx_file)
        if has_features or not needs_features:
            return "onnx", run
        message = (f"{onnx_file} was exported before the dermoscopy gate (it has no "
                   f"'features' output); {export}")
        if requested == "onnx":
            raise BundleError(message)
        warnings.warn(f"{message}. Using torch meanwhile.", stacklevel=3)
    return "torch", _torch_runner(path)


def _has_onnxruntime() -> bool:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def _onnx_runner(path: Path) -> tuple[Runner, bool]:
    """The session as a runner, and whether it has the ``features`` output the gate reads."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name
    outputs = [o.name for o in session.get_outputs()]
    if "features" not in outputs:
        first = outputs[0]
        return (lambda inputs: (session.run([first], {input_name: inputs})[0], None)), False
    names = ["logits" if "logits" in outputs else outputs[0], "features"]

    def run(inputs: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        logits, features = session.run(names, {input_name: inputs})
        return logits, features

    return run, True


def _torch_runner(path: Path) -> Runner:
    from melanoscan.bundle import load_bundle

    return load_bundle(path, check_versions=False).logits_and_features
