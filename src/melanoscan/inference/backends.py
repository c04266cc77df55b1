"""Which backend runs a bundle's network, and its runner: onnxruntime (int8 or fp32) or torch.

``auto`` takes the int8 model when the bundle has one that passed its parity check for the
current weights and calibration (:func:`melanoscan.bundle.int8_state`), else the fp32 ONNX
export when it was made from the bundle's current weights (and has the gate's ``features``
output when a gate needs it), else torch; onnxruntime must be installed for either ONNX model.
An export that exists but cannot be used is passed over with a warning. A bundle shipped
without its fp32 export to stay small (``exports.onnx_on_demand``, as the packaged model is)
gets one made on first use, in the user cache (:func:`on_demand_export`), for ``auto`` and
``onnx`` alike.
"""

from __future__ import annotations

import os
import shutil
import warnings
from pathlib import Path

import numpy as np

from melanoscan.bundle import (
    ONNX_FILE,
    WEIGHTS_FILE,
    BundleError,
    BundleMetadata,
    int8_path,
    int8_state,
    onnx_path,
    onnx_state,
    read_metadata,
    weights_sha256,
)
from melanoscan.inference.engine import Runner

__all__ = ["BACKENDS", "INT8_BACKEND", "ON_DEMAND", "on_demand_export", "open_runner"]

INT8_BACKEND = "onnx-int8"
BACKENDS = ("auto", "onnx", INT8_BACKEND, "torch")
ON_DEMAND = "onnx_on_demand"
"""Key of ``exports`` in bundle.json: the bundle ships without ``model.onnx`` on purpose, and
``auto`` exports one into the user cache when first needed."""


def open_runner(
    path: Path, metadata: BundleMetadata, requested: str, needs_features: bool
) -> tuple[str, Runner]:
    """The backend (``onnx-int8``, ``onnx`` or ``torch``) for ``requested`` and its runner.

    Args:
        path: the bundle directory.
        metadata: its metadata.
        requested: ``auto``, ``onnx``, ``onnx-int8`` or ``torch``.
        needs_features: the bundle has a gate, so the runner must give its features.

    Raises:
        BundleError: ``onnx`` or ``onnx-int8`` was asked for but that model is missing, stale
            or has no ``features`` output a gate needs, or onnxruntime is not installed.
    """
    if requested in (INT8_BACKEND, "auto"):
        runner = _int8_runner(path, metadata, requested, needs_features)
        if runner is not None:
            return INT8_BACKEND, runner
    backend = requested
    onnx_file = onnx_path(path, metadata)
    export = f"run: melanoscan export --model {path}"
    state = onnx_state(path, metadata)
    if requested in ("auto", "onnx") and state == "absent" and metadata.exports.get(ON_DEMAND):
        cached = on_demand_export(path)
        if cached is not None:
            onnx_file, state = cached, "current"
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


def _int8_runner(
    path: Path, metadata: BundleMetadata, requested: str, needs_features: bool
) -> Runner | None:
    """The int8 model's runner when it may be used; ``None`` for ``auto`` to look further.

    Raises:
        BundleError: ``onnx-int8`` was asked for and the int8 model cannot be used.
    """
    state = int8_state(path, metadata)
    int8_file = int8_path(path, metadata)
    export = f"run: melanoscan export --int8 --model {path}"
    problem = None
    if state == "absent":
        problem = (f"{path} has no int8 model that passed its parity check ({int8_file.name}); "
                   f"{export}, or use --backend onnx or torch")
    elif state == "stale":
        problem = (f"{int8_file} was checked against other weights or another calibration than "
                   f"the bundle's present ones (or was changed since); {export}")
    elif not _has_onnxruntime():
        problem = f"backend '{INT8_BACKEND}' needs the onnxruntime package"
    if problem is None:
        run, has_features = _onnx_runner(int8_file)
        if has_features or not needs_features:
            return run
        problem = f"{int8_file} has no 'features' output for the dermoscopy gate; {export}"
    if requested == INT8_BACKEND:
        raise BundleError(problem)
    if state != "absent" and _has_onnxruntime():
        warnings.warn(f"{problem}. Passing over the int8 model.", stacklevel=4)
    return None


def on_demand_export(path: Path) -> Path | None:
    """The fp32 ONNX model of a bundle's weights, exported once into the user cache.

    Kept under ``<cache>/onnx/<first 16 hex digits of the weights' SHA-256>/`` (the cache of
    :func:`melanoscan.data.cache.default_cache_dir`), so every copy of the same weights shares
    it; made and checked by :func:`melanoscan.inference.export.export_onnx` in a folder of its
    own, then renamed into place, so that concurrent first uses cannot leave a half-written
    model. ``None`` (with a warning) when onnxruntime is missing or the export fails: the caller
    falls back to torch.
    """
    from melanoscan.data.cache import default_cache_dir

    digest = weights_sha256(path)
    if digest is None or not _has_onnxruntime():
        return None
    target = default_cache_dir() / "onnx" / digest[:16]
    if _export_matches(target, digest):
        return target / ONNX_FILE
    warnings.warn(f"{path} ships without its ONNX model: exporting it once to {target} (a few "
                  "seconds; later runs reuse it)", stacklevel=4)
    scratch = target.with_name(f"{target.name}.{os.getpid()}.partial")
    try:
        from melanoscan.inference.export import export_onnx  # torch: only to make the export

        shutil.rmtree(scratch, ignore_errors=True)
        export_onnx(path, scratch)
        if target.exists():  # a broken leftover (its export did not match above)
            shutil.rmtree(target, ignore_errors=True)
        try:
            scratch.rename(target)
        except OSError:  # another process got there first: use its export if it is sound
            shutil.rmtree(scratch, ignore_errors=True)
        if _export_matches(target, digest):
            return target / ONNX_FILE
        raise BundleError(f"{target} holds another export")
    except (OSError, RuntimeError, BundleError) as exc:
        shutil.rmtree(scratch, ignore_errors=True)
        warnings.warn(f"could not export {path} to ONNX in {target} ({exc}); using torch",
                      stacklevel=4)
        return None


def _export_matches(folder: Path, digest: str) -> bool:
    """Whether ``folder`` holds a finished ONNX export of the weights with SHA-256 ``digest``."""
    try:
        recorded = read_metadata(folder).exports.get("onnx", {}).get("weights_sha256")
    except BundleError:
        return False
    return recorded == digest and (folder / ONNX_FILE).is_file()


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
