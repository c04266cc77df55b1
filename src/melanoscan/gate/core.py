"""The gate itself: fitted statistics, the verdict per image, and its place in a bundle.

A gate holds the mean, scale and principal axes of the model's own gate features
(:class:`melanoscan.models.features.LogitsAndFeatures`) over dermoscopy training images, and a
distance threshold set on held-out dermoscopy; optionally (:func:`fit_contrast`) a linear
"dermoscopy or not" score on the same standardised features, fitted against example
non-dermoscopy images. An image is ``not_dermoscopy`` when either score exceeds its limit or it
has no colour, ``poor_quality`` when :class:`QualityLimits` refuses it, else ``ok``. The
distance needs no negative example; the contrast score catches what lies close to dermoscopy
in that distance (clinical photos of skin). Method and limits: docs/GATE.md.
"""

from __future__ import annotations

import hashlib
import io
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from melanoscan.bundle import BundleMetadata, atomic_write, weights_sha256
from melanoscan.gate.quality import QualityLimits, measure_quality

__all__ = [
    "FLAGGED",
    "GATE_FILE",
    "NOT_DERMOSCOPY",
    "OK",
    "POOR_QUALITY",
    "UNCHECKED",
    "VERDICTS",
    "VERDICT_LABELS",
    "Gate",
    "GateVerdict",
    "fit_contrast",
    "fit_statistics",
    "load_gate",
    "save_gate",
]

GATE_FILE = "gate.npz"
METHOD = "pca-mahalanobis+residual"
CONTRAST_METHOD = "+logistic-contrast"
OK, NOT_DERMOSCOPY, POOR_QUALITY, UNCHECKED = "ok", "not_dermoscopy", "poor_quality", "unchecked"
VERDICTS = (OK, NOT_DERMOSCOPY, POOR_QUALITY, UNCHECKED)
FLAGGED = (NOT_DERMOSCOPY, POOR_QUALITY)
VERDICT_LABELS = {OK: "ok", NOT_DERMOSCOPY: "not dermoscopy", POOR_QUALITY: "poor quality",
                  UNCHECKED: "unchecked"}

DEFAULT_COMPONENTS = 64
DEFAULT_QUANTILE = 0.995
DEFAULT_MARGIN = 1.5
"""The threshold is the held-out images' :data:`DEFAULT_QUANTILE` distance times this margin:
dermoscopy from other archives and devices lies further out than the model's own validation
images (measured in docs/GATE.md), and refusing a real lesion is the costlier mistake."""
CONTRAST_C = 0.2
"""Inverse L2 strength of the contrast score's logistic regression: strong, because the
negative examples are few and the score must not learn any one of them (a watermark, say)."""
CONTRAST_MARGIN = 2.0
"""Added to the held-out dermoscopy's :data:`DEFAULT_QUANTILE` contrast logit to set its
limit: a real lesion from another archive must not be refused for looking a little unusual."""
MIN_COLOURFULNESS = 0.03
"""Below this mean saturation an image is greyscale: no dermoscopy image is (lowest seen 0.044)."""


@dataclass(frozen=True)
class GateVerdict:
    """The gate's answer for one image.

    Args:
        verdict: one of :data:`VERDICTS`.
        score: distance from the fitted dermoscopy relative to the threshold (above 1: not
            dermoscopy); ``None`` when not measured.
        reason: why the image was flagged, for a person; empty when ``ok``.
    """

    verdict: str
    score: float | None
    reason: str

    @property
    def flagged(self) -> bool:
        return self.verdict in FLAGGED


@dataclass
class Gate:
    """Fitted gate statistics.

    Args:
        mean: per-feature mean over the fitting images ``(D,)``.
        scale: per-feature standard deviation ``(D,)``.
        axes: orthonormal principal axes of the standardised features ``(D, K)``.
        variances: variance along each axis ``(K,)``.
        residual_variance: mean variance left outside the axes (per dimension).
        threshold: squared distance above which an image is not dermoscopy.
        quality: the image-quality limits.
        min_colourfulness: mean saturation below which an image is greyscale.
        info: what it was fitted on and how (stored in the bundle metadata).
        contrast: weights of the "not dermoscopy" logit over the standardised features
            ``(D,)``, or ``None`` when the gate was fitted without negative examples.
        contrast_bias: intercept of that logit.
        contrast_threshold: the logit above which an image is not dermoscopy.
    """

    mean: np.ndarray
    scale: np.ndarray
    axes: np.ndarray
    variances: np.ndarray
    residual_variance: float
    threshold: float
    quality: QualityLimits = field(default_factory=QualityLimits)
    min_colourfulness: float = MIN_COLOURFULNESS
    info: dict[str, Any] = field(default_factory=dict)
    contrast: np.ndarray | None = None
    contrast_bias: float = 0.0
    contrast_threshold: float = 0.0

    @property
    def feature_size(self) -> int:
        return int(self.mean.shape[0])

    def distances(self, features: np.ndarray) -> np.ndarray:
        """Squared Mahalanobis distance within the principal axes plus the scaled residual."""
        values = np.asarray(features, dtype=np.float64)
        if values.ndim != 2 or values.shape[1] != self.feature_size:
            raise ValueError(f"the gate expects {self.feature_size} features per image, got "
                             f"shape {values.shape}: it was fitted for another model; refit it")
        z = (values - self.mean) / self.scale
        projected = z @ self.axes
        # The axes are orthonormal: what lies outside them is the rest of the squared norm.
        residual = np.maximum((z**2).sum(axis=1) - (projected**2).sum(axis=1), 0.0)
        return (projected**2 / self.variances).sum(axis=1) + residual / self.residual_variance

    def contrast_logits(self, features: np.ndarray) -> np.ndarray | None:
        """The "not dermoscopy" logit of each image, ``None`` without a contrast score."""
        if self.contrast is None:
            return None
        z = (np.asarray(features, dtype=np.float64) - self.mean) / self.scale
        return z @ self.contrast + self.contrast_bias

    def scores(self, features: np.ndarray) -> np.ndarray:
        """Each image's score relative to its limit: above 1 is not dermoscopy.

        The larger of the distance over its threshold and, with a contrast score, the odds of
        "not dermoscopy" over the odds at its limit (``exp(logit - limit)``).
        """
        return np.maximum(*self._ratios(features))

    def _ratios(self, features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        distance = self.distances(features) / self.threshold
        logits = self.contrast_logits(features)
        if logits is None:
            return distance, np.zeros_like(distance)
        return distance, np.exp(np.minimum(logits - self.contrast_threshold, 50.0))

    def assess(
        self, pixels: np.ndarray, sizes: Sequence[tuple[int, int]], features: np.ndarray
    ) -> list[GateVerdict]:
        """The verdict for each image.

        Args:
            pixels: ``uint8`` ``(N, S, S, 3)`` outputs of :meth:`Preprocessing.resize`.
            sizes: ``(width, height)`` of each decoded image.
            features: the model's gate features ``(N, D)`` for the same images.
        """
        distances, contrasts = self._ratios(features)
        verdicts = []
        for image, size, distance, contrast in zip(pixels, sizes, distances, contrasts,
                                                   strict=True):
            score = max(distance, contrast)
            quality = measure_quality(image, size)
            problem = self.quality.problem(quality)
            if problem is not None:
                verdicts.append(GateVerdict(POOR_QUALITY, float(score), problem))
            elif quality.colourfulness < self.min_colourfulness:
                verdicts.append(GateVerdict(
                    NOT_DERMOSCOPY, float(score),
                    f"a greyscale image (colourfulness {quality.colourfulness:.3f})"))
            elif distance > 1.0:
                verdicts.append(GateVerdict(
                    NOT_DERMOSCOPY, float(score),
                    f"unlike the dermoscopy images this model knows (gate score {score:.2f}, "
                    "limit 1)"))
            elif contrast > 1.0:
                verdicts.append(GateVerdict(
                    NOT_DERMOSCOPY, float(score),
                    "looks like a photo taken without a dermatoscope, or another kind of "
                    f"picture (gate score {score:.2f}, limit 1)"))
            else:
                verdicts.append(GateVerdict(OK, float(score), ""))
        return verdicts


def fit_statistics(
    fit_features: np.ndarray,
    threshold_features: np.ndarray,
    *,
    quality: QualityLimits | None = None,
    components: int = DEFAULT_COMPONENTS,
    quantile: float = DEFAULT_QUANTILE,
    margin: float = DEFAULT_MARGIN,
    info: dict[str, Any] | None = None,
) -> Gate:
    """Fit the gate on dermoscopy features, and set its threshold on other dermoscopy.

    Args:
        fit_features: gate features of the fitting images (training images) ``(N, D)``.
        threshold_features: those of held-out dermoscopy images (validation) ``(M, D)``.
        quality: image-quality limits (default :class:`QualityLimits`).
        components: principal axes kept (fewer when there are fewer images).
        quantile: share of the held-out images that must pass before the margin.
        margin: the threshold is the held-out ``quantile`` distance times this.
        info: recorded with the gate (what the images were).

    Raises:
        ValueError: fewer than 10 images in either set.
    """
    x = np.asarray(fit_features, dtype=np.float64)
    if len(x) < 10 or len(threshold_features) < 10:
        raise ValueError(f"the gate needs at least 10 fitting and 10 held-out images, got "
                         f"{len(x)} and {len(threshold_features)}")
    mean = x.mean(axis=0)
    scale = x.std(axis=0) + 1e-6
    _, singular, vt = np.linalg.svd((x - mean) / scale, full_matrices=False)
    variances = singular**2 / (len(x) - 1)
    k = max(1, min(components, len(variances) - 1))
    rest = variances[k:]
    residual_variance = float(rest.mean()) if rest.size and rest.mean() > 0 else 1.0
    gate = Gate(mean=mean, scale=scale, axes=vt[:k].T.copy(),
                variances=np.maximum(variances[:k], 1e-12), residual_variance=residual_variance,
                threshold=1.0, quality=quality or QualityLimits())
    held_out = gate.distances(threshold_features)
    gate.threshold = float(np.quantile(held_out, quantile) * margin)
    gate.info = {
        **(info or {}),
        "fit_images": len(x),
        "threshold_images": len(held_out),
        "components": k,
        "quantile": quantile,
        "margin": margin,
        "held_out_flagged": float((held_out > gate.threshold).mean()),
        "fitted": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    return gate


def fit_contrast(
    gate: Gate,
    dermoscopy: np.ndarray,
    negatives: np.ndarray,
    held_out: np.ndarray,
    *,
    quantile: float = DEFAULT_QUANTILE,
    margin: float = CONTRAST_MARGIN,
    info: dict[str, Any] | None = None,
) -> Gate:
    """Add a "dermoscopy or not" score to a fitted gate, learnt against example negatives.

    A logistic regression on the gate's standardised features (strong L2, classes weighted
    equally) separates dermoscopy from the negatives; its limit is the held-out dermoscopy's
    ``quantile`` logit plus ``margin``, so held-out dermoscopy passes as it does the distance.

    Args:
        gate: a gate from :func:`fit_statistics` (changed in place and returned).
        dermoscopy: gate features of dermoscopy images (the gate's fitting images) ``(N, D)``.
        negatives: those of example non-dermoscopy images ``(M, D)``.
        held_out: those of other dermoscopy (the threshold images) ``(K, D)``.
        quantile: share of the held-out images below the limit before the margin.
        margin: logit units added to that quantile.
        info: recorded with the gate (what the negatives were).

    Raises:
        ValueError: fewer than 10 negatives.
    """
    from sklearn.linear_model import LogisticRegression  # fitting only, never at prediction

    if len(negatives) < 10:
        raise ValueError(f"the contrast score needs at least 10 negative images, got "
                         f"{len(negatives)}")
    x = np.concatenate([dermoscopy, negatives]).astype(np.float64)
    y = np.r_[np.zeros(len(dermoscopy)), np.ones(len(negatives))]
    model = LogisticRegression(C=CONTRAST_C, class_weight="balanced", max_iter=2000)
    model.fit((x - gate.mean) / gate.scale, y)
    gate.contrast = model.coef_[0].astype(np.float64)
    gate.contrast_bias = float(model.intercept_[0])
    held = gate.contrast_logits(held_out)
    assert held is not None
    gate.contrast_threshold = float(np.quantile(held, quantile) + margin)
    gate.info = {
        **gate.info,
        **(info or {}),
        "contrast_negatives": len(negatives),
        "contrast_margin": margin,
        "held_out_flagged": float((gate.scores(held_out) > 1.0).mean()),
    }
    return gate


def save_gate(directory: Path, gate: Gate, metadata: BundleMetadata) -> dict[str, Any]:
    """Write ``gate.npz`` atomically and set ``metadata.gate`` (the caller writes bundle.json).

    Returns the metadata block.
    """
    directory = Path(directory)
    buffer = io.BytesIO()
    arrays: dict[str, Any] = {"mean": gate.mean, "scale": gate.scale, "axes": gate.axes,
                              "variances": gate.variances}
    if gate.contrast is not None:
        arrays["contrast"] = gate.contrast
    np.savez(buffer, **arrays)
    data = buffer.getvalue()
    atomic_write(directory / GATE_FILE, lambda tmp: tmp.write_bytes(data))
    block = {
        "file": GATE_FILE,
        "sha256": hashlib.sha256(data).hexdigest(),
        "method": METHOD + (CONTRAST_METHOD if gate.contrast is not None else ""),
        "feature_size": gate.feature_size,
        "residual_variance": gate.residual_variance,
        "threshold": gate.threshold,
        "min_colourfulness": gate.min_colourfulness,
        "quality": gate.quality.to_dict(),
        "weights_sha256": weights_sha256(directory),
        **gate.info,
    }
    if gate.contrast is not None:
        block["contrast_bias"] = gate.contrast_bias
        block["contrast_threshold"] = gate.contrast_threshold
    metadata.gate = block
    return block


def load_gate(directory: Path, metadata: BundleMetadata) -> Gate | None:
    """The bundle's gate; ``None`` when it has none, or (with a warning) a stale or broken one."""
    block = metadata.gate
    if not block:
        return None
    path = Path(directory) / block.get("file", GATE_FILE)
    try:
        data = path.read_bytes()
    except OSError as exc:
        warnings.warn(f"{path} cannot be read ({exc}); the dermoscopy gate is off", stacklevel=3)
        return None
    if hashlib.sha256(data).hexdigest() != block.get("sha256"):
        warnings.warn(f"{path} does not match its record in bundle.json (interrupted write?); "
                      "the dermoscopy gate is off: refit it", stacklevel=3)
        return None
    weights = block.get("weights_sha256")
    if weights is not None and weights != weights_sha256(directory):
        warnings.warn(f"{directory}: the dermoscopy gate was fitted for other weights; it is off "
                      "until refitted (melanoscan calibrate --gate-only)", stacklevel=3)
        return None
    with np.load(io.BytesIO(data), allow_pickle=False) as arrays:
        return Gate(
            mean=arrays["mean"], scale=arrays["scale"], axes=arrays["axes"],
            variances=arrays["variances"], residual_variance=float(block["residual_variance"]),
            threshold=float(block["threshold"]),
            quality=QualityLimits.from_dict(block.get("quality", {})),
            min_colourfulness=float(block.get("min_colourfulness", MIN_COLOURFULNESS)),
            info={k: v for k, v in block.items() if k not in _STORED},
            contrast=arrays["contrast"] if "contrast" in arrays.files else None,
            contrast_bias=float(block.get("contrast_bias", 0.0)),
            contrast_threshold=float(block.get("contrast_threshold", 0.0)),
        )


_STORED = {"file", "sha256", "method", "feature_size", "residual_variance", "threshold",
           "min_colourfulness", "quality", "weights_sha256", "contrast_bias",
           "contrast_threshold"}
