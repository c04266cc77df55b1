"""Classification metrics with bootstrap confidence intervals."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

__all__ = ["Estimate", "balanced_accuracy", "bootstrap"]


@dataclass(frozen=True)
class Estimate:
    """A figure with its 95% bootstrap confidence interval.

    Args:
        value: the figure on the whole sample.
        low: 2.5th percentile of the bootstrap distribution.
        high: 97.5th percentile.
    """

    value: float
    low: float
    high: float

    def to_dict(self) -> dict[str, float]:
        return {"value": self.value, "ci95": [self.low, self.high]}

    def __str__(self) -> str:
        return f"{self.value:.3f} [{self.low:.3f}, {self.high:.3f}]"


def balanced_accuracy(labels: np.ndarray, predicted: np.ndarray) -> float:
    """Mean recall over the classes present in ``labels`` (the ISIC challenge metric)."""
    classes = np.unique(labels)
    if classes.size == 0:
        return float("nan")
    return float(np.mean([(predicted[labels == c] == c).mean() for c in classes]))


def bootstrap(
    metric: Callable[..., float],
    *arrays: np.ndarray,
    samples: int = 1000,
    seed: int = 0,
) -> Estimate:
    """``metric(*arrays)`` with a percentile 95% interval from resampling rows with replacement.

    Resamples on which the metric is undefined (raises ``ValueError`` or returns NaN, e.g. an
    AUC with one class) are dropped.
    """
    n = len(arrays[0])
    value = float(metric(*arrays))
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(samples):
        rows = rng.integers(0, n, n)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # e.g. sklearn's one-class AUC warning
                result = float(metric(*(a[rows] for a in arrays)))
        except ValueError:
            continue
        if not np.isnan(result):
            values.append(result)
    if not values:
        return Estimate(value, float("nan"), float("nan"))
    low, high = np.percentile(values, [2.5, 97.5])
    return Estimate(value, float(low), float(high))
