"""Calibrated predictions with a melanoma alert, from a bundle, on torch or onnxruntime.

Both backends get the same input: :class:`melanoscan.preprocess.Preprocessing` of the bundle.
Every image also goes through the bundle's dermoscopy gate (:mod:`melanoscan.gate`): one that
is not a dermoscopy image, or too poor to read, gets no melanoma alert.

:class:`Predictor` is the only way melanoscan runs a model on images: ``predict``, ``serve``,
``explain``, ``evaluate``, ``calibrate`` and the gate fitting all go through it, so the scores
they report are those of the backend users run (the loop itself is in
:mod:`melanoscan.inference.engine`).
"""

from __future__ import annotations

import functools
import glob
import os
import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from melanoscan import taxonomy
from melanoscan.bundle import (
    WEIGHTS_FILE,
    BundleMetadata,
    calibration_state,
    read_metadata,
    read_training_images,
    resolve_bundle_path,
    warn_if_versions_differ,
    weights_sha256,
)
from melanoscan.calibration import DEFAULT_ALERT_THRESHOLD, softmax
from melanoscan.data.folders import file_problem, list_files
from melanoscan.data.images import ImageSource, is_image_file
from melanoscan.gate import FLAGGED, UNCHECKED, VERDICT_LABELS, Gate, GateVerdict, load_gate
from melanoscan.inference.backends import BACKENDS, open_runner
from melanoscan.inference.engine import (
    MicroBatcher,
    ModelOutputs,
    decode_resized,
    decoded_batches,
    forward,
)
from melanoscan.preprocess import Preprocessing
from melanoscan.progress import progress_bar

__all__ = [
    "BACKENDS",
    "Prediction",
    "Predictor",
    "SkippedInput",
    "expand_inputs",
    "load_model",
]


@dataclass(frozen=True)
class Prediction:
    """One image's result.

    Args:
        path: where the image came from (``None`` for in-memory images).
        predicted_class: the most probable class (also for a flagged image: read
            :attr:`headline` and :attr:`gate` first).
        confidence: its calibrated probability.
        melanoma_probability: calibrated probability of melanoma.
        melanoma_alert: ``melanoma_probability`` reaches the bundle's alert threshold and the
            gate did not refuse the image.
        probabilities: calibrated probability of every class, in the model's class order.
        gate: the dermoscopy gate's verdict: ``ok``, ``not_dermoscopy``, ``poor_quality``, or
            ``unchecked`` when the bundle has no gate.
        gate_score: distance from the dermoscopy the gate was fitted on, relative to its
            threshold (above 1: not dermoscopy); ``None`` when not measured.
        gate_reason: why the image was flagged (empty when ``ok``).
        gate_overridden: flagged, but scored anyway because the gate was switched off
            (``gate=False``, ``--no-gate``): the alert and class stand, marked.
    """

    path: str | None
    predicted_class: str
    confidence: float
    melanoma_probability: float
    melanoma_alert: bool
    probabilities: dict[str, float]
    gate: str = UNCHECKED
    gate_score: float | None = None
    gate_reason: str = ""
    gate_overridden: bool = False

    @property
    def flagged(self) -> bool:
        """The gate refused the image (whether or not it was scored anyway)."""
        return self.gate in FLAGGED

    @property
    def headline(self) -> str:
        """What a person must read first: the gate's refusal, "melanoma suspected" when the
        alert fires (whatever the top class), else the predicted class."""
        if self.flagged and not self.gate_overridden:
            return VERDICT_LABELS[self.gate]
        if self.melanoma_alert:
            lead = "melanoma suspected"
        else:
            lead = taxonomy.DISPLAY_NAMES.get(self.predicted_class, self.predicted_class)
        if self.gate_overridden:
            lead += f" (gate off: {VERDICT_LABELS[self.gate]})"
        return lead

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "headline": self.headline,
                **{k: v for k, v in asdict(self).items() if k != "path"}}


@dataclass(frozen=True)
class SkippedInput:
    """An input that could not be predicted, and why."""

    path: str
    reason: str


class Predictor:
    """A bundle ready to predict: calibrated probabilities, the melanoma alert and the gate.

    A bundle without a gate (made before melanoscan had one) loads with a warning; its
    predictions say ``gate="unchecked"``. A bundle saved under other versions of the packages
    its outputs depend on loads with one warning naming them.

    Args:
        bundle: bundle directory (``None``: the model shipped in the package).
        backend: ``onnx`` (onnxruntime, no torch), ``onnx-int8`` (the int8 model that passed
            its parity check, ``melanoscan export --int8``), ``torch``, or ``auto`` (with
            onnxruntime installed, the int8 model when the bundle has one that passed its
            parity check for its current weights and calibration, else the fp32 ONNX export
            when it was made from the current weights, or made on first use for a bundle
            shipped without one, as the packaged model is; else torch, with a warning when an
            export is stale).
        use_gate: assess images with the bundle's gate; ``False`` loads none (and does not warn
            about a missing one): for fitting a gate.
        micro_batching: merge forward passes that threads request at the same time into one
            (:class:`~melanoscan.inference.engine.MicroBatcher`); the service turns it on when it
            runs more than one request at a time.

    Raises:
        BundleError: ``backend="onnx"`` but the bundle has no ONNX export, or it was made from
            other weights, or it predates the bundle's gate (no ``features`` output): run
            ``melanoscan export`` again; ``backend="onnx-int8"`` but the bundle has no int8
            model with a passing parity record for its present weights and calibration: run
            ``melanoscan export --int8``.
    """

    def __init__(
        self, bundle: Path | str | None = None, backend: str = "auto", use_gate: bool = True,
        micro_batching: bool = False,
    ) -> None:
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
        if threshold is not None and calibration_state(self.path, self.metadata) == "stale":
            warnings.warn(
                f"{self.path}: the temperature and alert threshold were fitted for other weights "
                f"than its {WEIGHTS_FILE} (e.g. before they were stored in half precision); "
                f"run melanoscan calibrate --model {self.path} --data HELD_OUT_DATA",
                stacklevel=2,
            )
        self._melanoma = self.classes.index(taxonomy.MELANOMA)
        self.gate: Gate | None = load_gate(self.path, self.metadata) if use_gate else None
        if self.gate is None and use_gate:
            warnings.warn(
                f"{self.path} has no dermoscopy gate: every image is scored as is (gate "
                f"'unchecked'); fit one with: melanoscan calibrate --model {self.path} "
                "--gate-only --data TRAINING_DATA",
                stacklevel=2,
            )
        self.backend, self._run = open_runner(self.path, self.metadata, backend,
                                              needs_features=self.gate is not None)
        warn_if_versions_differ(self.path, self.metadata,
                                ("Pillow", "numpy", "torch" if self.backend == "torch"
                                 else "onnxruntime"))
        if micro_batching:
            self._run = MicroBatcher(self._run)

    @property
    def name(self) -> str:
        return self.metadata.name

    @functools.cached_property
    def version(self) -> str:
        """Which weights answer: the first 12 hex digits of their SHA-256 (the bundle's creation
        time for a bundle without ``weights.pt``). Two bundles with the same weights agree."""
        digest = weights_sha256(self.path)
        return digest[:12] if digest else self.metadata.created

    @property
    def created(self) -> str:
        """When the bundle was made (UTC, ISO 8601)."""
        return self.metadata.created

    def training_images(self) -> pd.DataFrame:
        """Content hash, label and split of every image the model was trained or validated on."""
        return read_training_images(self.path)

    def predict(
        self, images: Iterable[ImageSource], batch_size: int = 32, gate: bool = True,
        tta: bool = False,
    ) -> list[Prediction]:
        """Predict paths, encoded bytes, PIL images or ``uint8`` arrays.

        Every kind goes through :func:`melanoscan.data.images.decode`, as files do: EXIF
        rotation applied, transparency composited on black.

        Args:
            images: the inputs.
            batch_size: images per forward pass.
            gate: withhold the alert from images the gate flags; ``False`` scores them anyway
                (their verdict is still given, with ``gate_overridden=True``).
            tta: average the logits over the 8 flips and 90-degree rotations (8 times the
                cost; the gate reads the image as it is).

        Raises:
            ImageDecodeError: an input cannot be read (use :meth:`predict_files` to skip them).
            ValueError: an array of a shape or type no image has.
        """
        results = []
        for chunk in _chunks(list(images), batch_size):
            resized = [decode_resized(item, self.preprocessing) for item in chunk]
            names = [str(item) if isinstance(item, str | Path) else None for item in chunk]
            pixels = np.stack([pixels for pixels, _ in resized])
            results.extend(self._predict_batch(
                names, pixels, [size for _, size in resized], gate, tta))
        return results

    def predict_files(
        self, paths: Sequence[Path], batch_size: int = 32, progress: Any = None,
        gate: bool = True, tta: bool = False,
    ) -> tuple[list[Prediction], list[SkippedInput]]:
        """Predict image files; unreadable ones are returned as skipped, the rest complete.

        ``gate`` and ``tta`` as in :meth:`predict`.
        """
        predictions: list[Prediction] = []
        skipped: list[SkippedInput] = []
        for batch in decoded_batches(paths, batch_size, self.preprocessing):
            skipped += [SkippedInput(str(paths[row]), reason) for row, reason in batch.unreadable]
            names: list[str | None] = [str(paths[row]) for row in batch.rows]
            predictions.extend(self._predict_batch(names, batch.pixels, batch.sizes, gate, tta))
            if progress is not None:
                progress(len(batch.rows) + len(batch.unreadable))
        return predictions, skipped

    def score_files(
        self,
        paths: Sequence[Path | str],
        *,
        tta: bool = False,
        features: bool = False,
        batch_size: int = 32,
        show_progress: bool = False,
    ) -> ModelOutputs:
        """Raw logits of every file, for scoring and fitting (``evaluate``, ``calibrate``).

        Unreadable files get NaN rows and are listed, never stop the pass. With a gate, every
        image also gets its verdict.

        Args:
            paths: the image files.
            tta: also the mean logits over the 8 dihedral views (``logits["tta"]``).
            features: keep the gate features of every image.
            batch_size: images per forward pass.
            show_progress: a progress bar.
        """
        n, k = len(paths), len(self.classes)
        logits = {"plain": np.full((n, k), np.nan, dtype=np.float32)}
        if tta:
            logits["tta"] = np.full((n, k), np.nan, dtype=np.float32)
        kept: np.ndarray | None = None
        verdicts: list[GateVerdict | None] = [None] * n if self.gate is not None else []
        unreadable: list[dict[str, str]] = []
        with progress_bar("Predicting", n, enabled=show_progress) as advance:
            for batch in decoded_batches(paths, batch_size, self.preprocessing):
                unreadable += [{"path": str(paths[row]), "reason": reason}
                               for row, reason in batch.unreadable]
                if batch.rows:
                    rows, pixels = batch.rows, batch.pixels
                    out = forward(self._run, self.preprocessing, pixels, tta)
                    logits["plain"][rows] = out.logits
                    if out.tta_logits is not None:
                        logits["tta"][rows] = out.tta_logits
                    if features and out.features is not None:
                        if kept is None:
                            kept = np.full((n, out.features.shape[1]), np.nan, dtype=np.float32)
                        kept[rows] = out.features
                    found = self._assess(pixels, batch.sizes, out.features)
                    if found is not None:
                        for row, verdict in zip(rows, found, strict=True):
                            verdicts[row] = verdict
                advance(len(batch.rows) + len(batch.unreadable))
        return ModelOutputs(list(self.classes), logits, unreadable, self.backend, kept, verdicts)

    def probabilities(self, images: Sequence[ImageSource]) -> np.ndarray:
        """Calibrated class probabilities ``(N, classes)``, in :attr:`classes` order: those of
        :meth:`predict`, gate or not."""
        predictions = self.predict(images, gate=False)
        return np.array([[p.probabilities[name] for name in self.classes] for p in predictions])

    def _assess(
        self, pixels: np.ndarray, sizes: list[tuple[int, int]], features: np.ndarray | None
    ) -> list[GateVerdict] | None:
        """The gate's verdict on each resized image (``None`` without a gate)."""
        if self.gate is None:
            return None
        assert features is not None  # _choose_backend: a gate implies a features output
        return self.gate.assess(pixels, sizes, features)

    def _predict_batch(
        self, names: Sequence[str | None], pixels: np.ndarray, sizes: list[tuple[int, int]],
        gate: bool, tta: bool,
    ) -> list[Prediction]:
        """Predictions for resized ``uint8`` images ``(N, S, S, 3)`` whose files were ``sizes``."""
        if not len(pixels):
            return []
        out = forward(self._run, self.preprocessing, pixels, tta)
        scored = out.tta_logits if out.tta_logits is not None else out.logits
        probabilities = softmax(scored, self.temperature)
        verdicts = self._assess(pixels, sizes, out.features)
        if verdicts is None:
            verdicts = [GateVerdict(UNCHECKED, None, "")] * len(pixels)
        results = []
        for name, row, verdict in zip(names, probabilities, verdicts, strict=True):
            best = int(row.argmax())
            melanoma = float(row[self._melanoma])
            refused = verdict.flagged and gate
            results.append(Prediction(
                path=name,
                predicted_class=self.classes[best],
                confidence=float(row[best]),
                melanoma_probability=melanoma,
                melanoma_alert=melanoma >= self.alert_threshold and not refused,
                probabilities={c: float(p) for c, p in zip(self.classes, row, strict=True)},
                gate=verdict.verdict,
                gate_score=verdict.score,
                gate_reason=verdict.reason,
                gate_overridden=verdict.flagged and not gate,
            ))
        return results


def load_model(bundle: Path | str | None = None, backend: str = "auto") -> Predictor:
    """The model shipped in the package, or the bundle at ``bundle``, ready to predict."""
    return Predictor(bundle, backend)


def expand_inputs(inputs: Sequence[str | Path]) -> tuple[list[Path], list[SkippedInput]]:
    """Files, directories (recursive) and globs → image files (sorted, unique) + misses.

    Broken links, link loops and unreadable folders are misses too, with their reason.
    """
    found: dict[Path, None] = {}
    missing: list[SkippedInput] = []

    def add(path: Path) -> None:
        problem = file_problem(path)
        if problem is None:
            found[path] = None
        else:
            missing.append(SkippedInput(str(path), problem))

    for item in inputs:
        path = Path(item)
        if path.is_dir():
            listing = list_files(path)
            found.update(dict.fromkeys(f for f in listing.files if is_image_file(f)))
            missing += [SkippedInput(str(u.path), u.reason) for u in listing.unlisted
                        if u.folder or is_image_file(u.path)]
        elif os.path.lexists(path):
            add(path)
        elif any(ch in str(item) for ch in "*?["):
            matches = [Path(m) for m in sorted(glob.glob(str(item), recursive=True))]
            matches = [m for m in matches if not m.is_dir()]
            for match in matches:
                add(match)
            if not matches:
                missing.append(SkippedInput(str(item), "no file matches this pattern"))
        else:
            missing.append(SkippedInput(str(item), "not found"))
    return list(found), missing


def _chunks(items: list, size: int) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
