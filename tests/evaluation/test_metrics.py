"""Metric functions against hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from melanoscan.evaluation.metrics import (
    balanced_accuracy,
    bootstrap,
    classification_metrics,
    melanoma_metrics,
    specificity_at_sensitivity,
)


def test_balanced_accuracy_by_hand() -> None:
    labels = np.array([0, 0, 0, 0, 1, 1, 2])
    predicted = np.array([0, 0, 0, 1, 1, 0, 1])
    assert balanced_accuracy(labels, predicted) == pytest.approx((3 / 4 + 1 / 2 + 0) / 3)


def test_bootstrap_interval_brackets_the_value_and_shrinks_with_n() -> None:
    rng = np.random.default_rng(1)
    small = rng.random(50) < 0.8
    large = rng.random(5000) < 0.8
    a = bootstrap(np.mean, small)
    b = bootstrap(np.mean, large)
    assert a.low <= a.value <= a.high and b.low <= b.value <= b.high
    assert (b.high - b.low) < (a.high - a.low) / 5
    assert b.low < 0.8 < b.high


def test_bootstrap_drops_undefined_resamples() -> None:
    labels = np.array([0, 0, 0, 0, 0, 0, 0, 1])
    scores = np.linspace(0, 1, 8)
    estimate = bootstrap(roc_auc_score, labels, scores, samples=200)
    assert estimate.value == 1.0 and estimate.low == pytest.approx(1.0)


def test_specificity_at_sensitivity_by_hand() -> None:
    positive = np.array([1, 1, 1, 1, 0, 0, 0, 0, 0], dtype=bool)
    scores = np.array([0.9, 0.8, 0.4, 0.2, 0.7, 0.3, 0.1, 0.05, 0.5])
    # 75% sensitivity needs threshold 0.4: negatives at 0.7 and 0.5 alert -> specificity 3/5.
    assert specificity_at_sensitivity(scores, positive, 0.75) == pytest.approx(3 / 5)
    # 100% needs threshold 0.2: negatives 0.7, 0.3, 0.5 alert -> 2/5.
    assert specificity_at_sensitivity(scores, positive, 1.0) == pytest.approx(2 / 5)
    assert specificity_at_sensitivity(scores, np.ones(9, dtype=bool), 0.9) is None


def test_melanoma_metrics_at_threshold_by_hand() -> None:
    positive = np.array([1, 1, 1, 1, 0, 0, 0, 0, 0], dtype=bool)
    scores = np.array([0.9, 0.8, 0.4, 0.2, 0.7, 0.3, 0.1, 0.05, 0.5])
    result = melanoma_metrics(positive, scores, threshold=0.45, samples=50)
    assert result["positives"] == 4
    assert result["sensitivity"]["value"] == pytest.approx(2 / 4)
    assert result["specificity"]["value"] == pytest.approx(3 / 5)
    assert result["auc"]["value"] == pytest.approx(roc_auc_score(positive, scores))
    assert melanoma_metrics(positive, scores, None, samples=10)["sensitivity"] is None


def test_classification_metrics_by_hand() -> None:
    classes = ["a", "melanoma", "c"]
    labels = np.array([0, 0, 1, 1, 2, 2])
    probabilities = np.array(
        [[0.8, 0.1, 0.1], [0.2, 0.7, 0.1], [0.1, 0.8, 0.1],
         [0.1, 0.6, 0.3], [0.1, 0.2, 0.7], [0.5, 0.2, 0.3]]
    )
    result = classification_metrics(labels, probabilities, classes, positive_class="melanoma",
                                     alert_threshold=0.65, samples=50)
    assert result["accuracy"]["value"] == pytest.approx(4 / 6)
    assert result["balanced_accuracy"]["value"] == pytest.approx((1 / 2 + 1 + 1 / 2) / 3)
    assert result["confusion_matrix"] == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    per_class = result["per_class"]
    assert per_class["melanoma"]["precision"] == pytest.approx(2 / 3)
    assert per_class["a"]["recall"] == pytest.approx(1 / 2)
    assert per_class["c"]["f1"] == pytest.approx(2 / 3)
    assert result["melanoma"]["sensitivity"]["value"] == pytest.approx(1 / 2)  # 0.8 yes, 0.6 no
    assert result["melanoma"]["specificity"]["value"] == pytest.approx(3 / 4)  # 0.7 alerts


def test_training_and_evaluation_share_one_balanced_accuracy() -> None:
    import torch

    from melanoscan.evaluation.metrics import balanced_accuracy, confusion_balanced_accuracy
    from melanoscan.training.module import balanced_accuracy as training_balanced_accuracy

    labels = np.array([0, 0, 0, 1, 1, 3])
    predicted = np.array([0, 1, 0, 1, 1, 0])
    # Recall 2/3, 1 and 0 over the classes present (class 2 has no image).
    assert balanced_accuracy(labels, predicted) == pytest.approx((2 / 3 + 1 + 0) / 3)
    confusion = np.zeros((4, 4), dtype=np.int64)
    np.add.at(confusion, (labels, predicted), 1)
    assert confusion_balanced_accuracy(confusion) == balanced_accuracy(labels, predicted)
    assert training_balanced_accuracy(torch.from_numpy(confusion)) == pytest.approx(
        balanced_accuracy(labels, predicted))
