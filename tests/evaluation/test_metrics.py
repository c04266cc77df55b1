"""Metric functions against hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from melanoscan.evaluation.metrics import balanced_accuracy, bootstrap


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
