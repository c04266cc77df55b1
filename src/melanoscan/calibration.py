"""Calibration in one place: temperature scaling, the melanoma alert threshold and the rule that
fits both (training on its validation split, ``melanoscan calibrate`` on new held-out data),
plus the expected calibration error. Numpy only: the lowest layer of the package."""

from __future__ import annotations

from typing import Any

import numpy as np

from melanoscan import taxonomy

__all__ = [
    "DEFAULT_ALERT_THRESHOLD",
    "alert_threshold",
    "calibrate",
    "expected_calibration_error",
    "fit_temperature",
    "log_loss",
    "softmax",
]

DEFAULT_ALERT_THRESHOLD = 0.5
"""The melanoma alert threshold of a bundle that was never calibrated."""


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    scaled = np.asarray(logits, dtype=np.float64) / temperature
    scaled -= scaled.max(axis=1, keepdims=True)
    exp = np.exp(scaled)
    return exp / exp.sum(axis=1, keepdims=True)


def log_loss(logits: np.ndarray, labels: np.ndarray, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of ``labels`` under ``softmax(logits / temperature)``."""
    probabilities = softmax(logits, temperature)
    picked = probabilities[np.arange(len(labels)), labels]
    return float(-np.mean(np.log(np.clip(picked, 1e-12, None))))


def fit_temperature(
    logits: np.ndarray, labels: np.ndarray, bounds: tuple[float, float] = (0.05, 20.0)
) -> float:
    """The temperature minimising validation log loss (golden-section search on log T).

    The negative log-likelihood is convex in ``1/T``, so the one-dimensional search finds the
    optimum within ``bounds``.
    """
    if len(labels) == 0:
        raise ValueError("temperature scaling needs at least one labelled image")
    low, high = np.log(bounds[0]), np.log(bounds[1])
    ratio = (np.sqrt(5) - 1) / 2
    a, b = high - ratio * (high - low), low + ratio * (high - low)
    loss_a, loss_b = log_loss(logits, labels, np.exp(a)), log_loss(logits, labels, np.exp(b))
    for _ in range(60):
        if loss_a < loss_b:
            high, b, loss_b = b, a, loss_a
            a = high - ratio * (high - low)
            loss_a = log_loss(logits, labels, np.exp(a))
        else:
            low, a, loss_a = a, b, loss_b
            b = low + ratio * (high - low)
            loss_b = log_loss(logits, labels, np.exp(b))
    return float(np.exp((low + high) / 2))


def expected_calibration_error(
    probabilities: np.ndarray, labels: np.ndarray, bins: int = 15
) -> float:
    """ECE of the top-class confidence: bin-size-weighted |accuracy - confidence| (equal-width)."""
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == labels
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    error = 0.0
    for b in range(bins):
        members = which == b
        if members.any():
            error += members.mean() * abs(correct[members].mean() - confidence[members].mean())
    return float(error)


def alert_threshold(scores: np.ndarray, positive: np.ndarray, target_sensitivity: float) -> float:
    """The highest threshold whose alert (``score >= threshold``) reaches the sensitivity.

    Raises:
        ValueError: no positive case to choose from, or a target outside (0, 1].
    """
    if not 0.0 < target_sensitivity <= 1.0:
        raise ValueError(f"target sensitivity must be in (0, 1], got {target_sensitivity}")
    positives = np.sort(np.asarray(scores)[np.asarray(positive, dtype=bool)])[::-1]
    if positives.size == 0:
        raise ValueError("no melanoma among the images: cannot choose an alert threshold")
    needed = int(np.ceil(target_sensitivity * positives.size - 1e-9))
    return float(positives[max(needed, 1) - 1])


def calibrate(
    logits: np.ndarray, labels: np.ndarray, target_sensitivity: float, fitted_on: str
) -> dict[str, Any]:
    """Temperature (minimum log loss) and the melanoma alert threshold reaching the target.

    The threshold applies to the calibrated melanoma probability; it is ``None`` when the
    images hold no melanoma.
    """
    temperature = fit_temperature(logits, labels)
    calibrated = softmax(logits, temperature)
    melanoma = taxonomy.CLASSES.index(taxonomy.MELANOMA)
    is_melanoma = labels == melanoma
    threshold = None
    if is_melanoma.any():
        threshold = alert_threshold(calibrated[:, melanoma], is_melanoma, target_sensitivity)
    return {
        "temperature": temperature,
        "alert_threshold": threshold,
        "target_sensitivity": target_sensitivity,
        "fitted_on": f"{fitted_on} ({len(labels)} images, {int(is_melanoma.sum())} melanoma)",
        "ece_before": expected_calibration_error(softmax(logits), labels),
        "ece_after": expected_calibration_error(calibrated, labels),
    }
