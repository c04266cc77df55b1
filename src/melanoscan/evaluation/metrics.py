"""Classification metrics with bootstrap confidence intervals."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.metrics import (
    confusion_matrix,
    precision_recall_fscore_support,
    roc_auc_score,
    roc_curve,
)

__all__ = [
    "Estimate",
    "accuracy",
    "balanced_accuracy",
    "bootstrap",
    "classification_metrics",
    "confusion_balanced_accuracy",
    "melanoma_metrics",
    "specificity_at_sensitivity",
]


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

    def to_dict(self) -> dict[str, float | list[float]]:
        return {"value": self.value, "ci95": [self.low, self.high]}

    def __str__(self) -> str:
        return f"{self.value:.3f} [{self.low:.3f}, {self.high:.3f}]"


def balanced_accuracy(labels: np.ndarray, predicted: np.ndarray) -> float:
    """Mean recall over the classes present in ``labels`` (the ISIC challenge metric)."""
    labels, predicted = np.asarray(labels), np.asarray(predicted)
    if labels.size == 0:
        return float("nan")
    size = int(max(labels.max(), predicted.max(initial=0))) + 1
    confusion = np.zeros((size, size), dtype=np.int64)
    np.add.at(confusion, (labels, predicted), 1)
    return confusion_balanced_accuracy(confusion)


def confusion_balanced_accuracy(confusion: np.ndarray) -> float:
    """Mean recall over the classes present (rows with a count) of a confusion matrix whose
    rows are true classes: the one definition training's validation and evaluation share."""
    confusion = np.asarray(confusion)
    support = confusion.sum(axis=1)
    present = support > 0
    if not present.any():
        return float("nan")
    return float(np.mean(np.diagonal(confusion)[present] / support[present]))


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


def accuracy(labels: np.ndarray, predicted: np.ndarray) -> float:
    return float(np.mean(labels == predicted))


def specificity_at_sensitivity(
    scores: np.ndarray, positive: np.ndarray, sensitivity: float
) -> float | None:
    """Best specificity among thresholds whose sensitivity reaches ``sensitivity``."""
    if positive.all() or not positive.any():
        return None
    fpr, tpr, _ = roc_curve(positive, scores)
    reaching = tpr >= sensitivity - 1e-12
    return float(1.0 - fpr[reaching].min())


def classification_metrics(
    labels: np.ndarray,
    probabilities: np.ndarray,
    classes: Sequence[str],
    *,
    positive_class: str,
    alert_threshold: float | None,
    samples: int = 1000,
) -> dict[str, Any]:
    """Every figure of the evaluation report for one set of predictions.

    Args:
        labels: true class index per image (into ``classes``).
        probabilities: ``(N, len(classes))`` probabilities.
        classes: the scoring classes (9 names, or the 7 ISIC 2018 codes).
        positive_class: the melanoma class in ``classes``.
        alert_threshold: melanoma alert threshold on ``probabilities`` (``None``: not set).
        samples: bootstrap resamples for the 95% intervals.
    """
    predicted = probabilities.argmax(axis=1)
    k = len(classes)
    confusion = confusion_matrix(labels, predicted, labels=range(k))
    precision, recall, f1, support = precision_recall_fscore_support(
        labels, predicted, labels=range(k), zero_division=np.nan
    )
    per_class = {}
    for i, name in enumerate(classes):
        positives = labels == i
        auc = None
        if 0 < positives.sum() < len(labels):
            auc = float(roc_auc_score(positives, probabilities[:, i]))
        per_class[name] = {
            "precision": _number(precision[i]),
            "recall": _number(recall[i]) if support[i] else None,
            "f1": _number(f1[i]) if support[i] else None,
            "support": int(support[i]),
            "auc": auc,
        }
    return {
        "images": len(labels),
        "accuracy": bootstrap(accuracy, labels, predicted, samples=samples).to_dict(),
        "balanced_accuracy": bootstrap(
            balanced_accuracy, labels, predicted, samples=samples
        ).to_dict(),
        "macro_auc": _macro_auc(labels, probabilities, samples),
        "per_class": per_class,
        "confusion_matrix": confusion.tolist(),
        "melanoma": melanoma_metrics(
            labels == list(classes).index(positive_class),
            probabilities[:, list(classes).index(positive_class)],
            alert_threshold,
            samples,
        ),
    }


def melanoma_metrics(
    positive: np.ndarray, scores: np.ndarray, threshold: float | None, samples: int = 1000
) -> dict[str, Any]:
    """Melanoma vs rest: AUC, sensitivity and specificity at the alert threshold, and the
    specificity reachable at 90% and 95% sensitivity."""
    both = 0 < positive.sum() < len(positive)
    result: dict[str, Any] = {
        "positives": int(positive.sum()),
        "auc": bootstrap(roc_auc_score, positive, scores, samples=samples).to_dict()
        if both else None,
        "threshold": threshold,
        "sensitivity": None,
        "specificity": None,
        "specificity_at_sensitivity": {
            f"{s:.2f}": specificity_at_sensitivity(scores, positive, s) for s in (0.90, 0.95)
        },
    }
    if threshold is not None:
        alert = scores >= threshold
        if positive.any():
            result["sensitivity"] = bootstrap(np.mean, alert[positive], samples=samples).to_dict()
        if (~positive).any():
            result["specificity"] = bootstrap(
                lambda a: float(np.mean(~a)), alert[~positive], samples=samples
            ).to_dict()
    return result


def _macro_auc(labels: np.ndarray, probabilities: np.ndarray, samples: int) -> dict | None:
    """Mean one-vs-rest AUC over the classes present (needs at least two)."""

    def macro(y: np.ndarray, p: np.ndarray) -> float:
        aucs = [roc_auc_score(y == c, p[:, c]) for c in np.unique(y)]
        if len(aucs) < 2:
            raise ValueError("one class only")
        return float(np.mean(aucs))

    if len(np.unique(labels)) < 2:
        return None
    return bootstrap(macro, labels, probabilities, samples=samples).to_dict()


def _number(value: float) -> float | None:
    return None if np.isnan(value) else float(value)
