"""Calibrated predictions with a melanoma alert, from a bundle, on torch or onnxruntime.

Both backends get the same input: :class:`melanoscan.preprocess.Preprocessing` of the bundle.
"""

from __future__ import annotations

import glob
import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from melanoscan import taxonomy
from melanoscan.bundle import ONNX_FILE, BundleMetadata, read_metadata, resolve_bundle_path
from melanoscan.data.images import ImageDecodeError, decode, is_image_file
from melanoscan.evaluation.calibration import softmax
from melanoscan.preprocess import Preprocessing

__all__ = [
    "BACKENDS",
    "Prediction",
    "Predictor",
    "SkippedInput",
    "expand_inputs",
    "load_model",
]

BACKENDS = ("auto", "onnx", "torch")
DEFAULT_ALERT_THRESHOLD = 0.5
ImageInput = str | Path | Image.Image | np.ndarray


@dataclass(frozen=True)
class Prediction:
    """One image's result.

    Args:
        path: where the image came from (``None`` for in-memory images).
        predicted_class: the most probable class.
        confidence: its calibrated probability.
        melanoma_probability: calibrated probability of melanoma.
        melanoma_alert: ``melanoma_probability`` reaches the bundle's alert threshold.
        probabilities: calibrated probability of every class, in the model's class order.
    """

    path: str | None
    predicted_class: str
    confidence: float
    melanoma_probability: float
    melanoma_alert: bool
    probabilities: dict[str, float]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class SkippedInput:
    """An input that could not be predicted, and why."""

    path: str
    reason: str


class Predictor:
    """A bundle ready to predict: calibrated probabilities and the melanoma alert.

    Args:
        bundle: bundle directory (``None``: the model shipped in the package).
        backend: ``onnx`` (onnxruntime, no torch), ``torch``, or ``auto`` (ONNX when the
            bundle has an export and onnxruntime is installed).
    """

    def __init__(self, bundle: Path | str | None = None, backend: str = "auto") -> None:
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        self.path = resolve_bundle_path(bundle)
        self.metadata: BundleMetadata = read_metadata(self.path)
        self.preprocessing = Preprocessing.from_dict(self.metadata.preprocessing)
        self.classes = list(self.metadata.classes)
        self.temperature = float(self.metadata.calibration.get("temperature") or 1.0)
        threshold = self.metadata.calibration.get("alert_threshold")
        if threshold is None:
            warnings.warn(
                f"{self.path} is not calibrated: the melanoma alert uses probability >= "
                f"{DEFAULT_ALERT_THRESHOLD}; run melanoscan calibrate",
                stacklevel=2,
            )
        self.alert_threshold = float(DEFAULT_ALERT_THRESHOLD if threshold is None else threshold)
        self._melanoma = self.classes.index(taxonomy.MELANOMA)
        onnx_path = self.path / self.metadata.exports.get("onnx", {}).get("file", ONNX_FILE)
        if backend == "auto":
            backend = "onnx" if onnx_path.is_file() and _has_onnxruntime() else "torch"
        self.backend = backend
        self._run = _onnx_runner(onnx_path) if backend == "onnx" else _torch_runner(self.path)

    @property
    def name(self) -> str:
        return self.metadata.name

    @property
    def version(self) -> str:
        return self.metadata.created

    def logits(self, inputs: np.ndarray) -> np.ndarray:
        """Raw logits for preprocessed inputs ``(N, 3, S, S)``."""
        return self._run(np.ascontiguousarray(inputs, dtype=np.float32))

    def predict(self, images: Iterable[ImageInput], batch_size: int = 32) -> list[Prediction]:
        """Predict paths, PIL images or ``uint8`` RGB arrays.

        Raises:
            ImageDecodeError: an input cannot be read (use :meth:`predict_files` to skip them).
        """
        results = []
        for chunk in _chunks(list(images), batch_size):
            decoded = [_to_image(item) for item in chunk]
            names = [str(item) if isinstance(item, str | Path) else None for item in chunk]
            results.extend(self._predict_batch(names, decoded))
        return results

    def predict_files(
        self, paths: Sequence[Path], batch_size: int = 32, progress: Any = None
    ) -> tuple[list[Prediction], list[SkippedInput]]:
        """Predict image files; unreadable ones are returned as skipped, the rest complete."""
        predictions: list[Prediction] = []
        skipped: list[SkippedInput] = []
        for chunk in _chunks(list(paths), batch_size):
            names, images = [], []
            for path in chunk:
                try:
                    images.append(decode(path).image)
                    names.append(str(path))
                except ImageDecodeError as exc:
                    skipped.append(SkippedInput(str(path), exc.reason))
            predictions.extend(self._predict_batch(names, images))
            if progress is not None:
                progress(len(chunk))
        return predictions, skipped

    def probabilities(self, images: Sequence[Image.Image]) -> np.ndarray:
        """Calibrated class probabilities ``(N, classes)`` for decoded RGB images."""
        inputs = np.stack([self.preprocessing(image) for image in images])
        return softmax(self.logits(inputs), self.temperature)

    def _predict_batch(
        self, names: list[str | None], images: list[Image.Image]
    ) -> list[Prediction]:
        if not images:
            return []
        probabilities = self.probabilities(images)
        results = []
        for name, row in zip(names, probabilities, strict=True):
            best = int(row.argmax())
            melanoma = float(row[self._melanoma])
            results.append(Prediction(
                path=name,
                predicted_class=self.classes[best],
                confidence=float(row[best]),
                melanoma_probability=melanoma,
                melanoma_alert=melanoma >= self.alert_threshold,
                probabilities={c: float(p) for c, p in zip(self.classes, row, strict=True)},
            ))
        return results


def load_model(bundle: Path | str | None = None, backend: str = "auto") -> Predictor:
    """The model shipped in the package, or the bundle at ``bundle``, ready to predict."""
    return Predictor(bundle, backend)


def expand_inputs(inputs: Sequence[str | Path]) -> tuple[list[Path], list[SkippedInput]]:
    """Files, directories (recursive) and globs → image files (sorted, unique) + misses."""
    found: dict[Path, None] = {}
    missing = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found.update(dict.fromkeys(sorted(p for p in path.rglob("*") if is_image_file(p))))
        elif path.is_file():
            found[path] = None
        elif any(ch in str(item) for ch in "*?["):
            files = [Path(m) for m in sorted(glob.glob(str(item), recursive=True))]
            files = [f for f in files if f.is_file()]
            found.update(dict.fromkeys(files))
            if not files:
                missing.append(SkippedInput(str(item), "no file matches this pattern"))
        else:
            missing.append(SkippedInput(str(item), "not found"))
    return list(found), missing


def _to_image(item: ImageInput) -> Image.Image:
    if isinstance(item, Image.Image):
        return item.convert("RGB")
    if isinstance(item, np.ndarray):
        if item.dtype != np.uint8 or item.ndim != 3 or item.shape[2] != 3:
            raise ValueError(f"arrays must be uint8 (H, W, 3) RGB, got {item.dtype} {item.shape}")
        return Image.fromarray(item)
    return decode(Path(item)).image


def _chunks(items: list, size: int) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _has_onnxruntime() -> bool:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def _onnx_runner(path: Path) -> Any:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name
    return lambda inputs: session.run(None, {input_name: inputs})[0]


def _torch_runner(path: Path) -> Any:
    from melanoscan.bundle import load_bundle

    return load_bundle(path).logits
