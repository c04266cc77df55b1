"""Temperature scaling, ECE and the alert threshold on synthetic cases with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from melanoscan.calibration import (
    alert_threshold,
    expected_calibration_error,
    fit_temperature,
    log_loss,
    softmax,
)


def test_fit_temperature_recovers_the_generating_temperature() -> None:
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 3, size=(20000, 5))
    true_temperature = 2.5
    probabilities = softmax(logits, true_temperature)
    labels = np.array([rng.choice(5, p=p) for p in probabilities])
    fitted = fit_temperature(logits, labels)
    assert fitted == pytest.approx(true_temperature, rel=0.05)
    assert log_loss(logits, labels, fitted) < log_loss(logits, labels, 1.0)


def test_ece_by_hand() -> None:
    # Two confident-wrong images at 0.9 and two right at 0.6: bins hold |0-0.9| and |1-0.6|.
    probabilities = np.array([[0.9, 0.1], [0.9, 0.1], [0.4, 0.6], [0.4, 0.6]])
    labels = np.array([1, 1, 1, 1])
    assert expected_calibration_error(probabilities, labels) == pytest.approx(
        0.5 * 0.9 + 0.5 * 0.4
    )
    perfect = np.array([[1.0, 0.0], [0.0, 1.0]])
    assert expected_calibration_error(perfect, np.array([0, 1])) == 0.0


@pytest.mark.parametrize("target", [0.5, 0.9, 0.95, 1.0])
def test_alert_threshold_reaches_the_target(target: float) -> None:
    rng = np.random.default_rng(1)
    positive = rng.random(400) < 0.2
    scores = np.where(positive, rng.beta(5, 2, 400), rng.beta(2, 5, 400))
    threshold = alert_threshold(scores, positive, target)
    sensitivity = (scores[positive] >= threshold).mean()
    assert sensitivity >= target
    # The highest such threshold: any higher one misses the target.
    above = scores[positive][scores[positive] > threshold]
    assert (above.size / positive.sum()) < target


def test_alert_threshold_needs_positives() -> None:
    with pytest.raises(ValueError, match="no melanoma"):
        alert_threshold(np.array([0.1, 0.2]), np.array([False, False]), 0.9)
    with pytest.raises(ValueError, match="target sensitivity"):
        alert_threshold(np.array([0.1]), np.array([True]), 0.0)
