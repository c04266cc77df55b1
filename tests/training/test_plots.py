"""The training-curves figure draws the metrics table it is given."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from melanoscan.training.plots import plot_training_curves, training_curves_figure
from tests.conftest import assert_drawn_png


def _metrics() -> pd.DataFrame:
    return pd.DataFrame({
        "epoch": [0, 1, 2],
        "train_loss": [2.0, 1.4, 1.1],
        "val_loss": [1.9, 1.6, 1.7],
        "train_accuracy": [0.3, 0.5, 0.6],
        "val_accuracy": [0.35, 0.45, 0.44],
        "val_balanced_accuracy": [0.2, 0.3, 0.33],
    })


def test_training_curves_draw_each_metric_per_epoch() -> None:
    metrics = _metrics()
    loss, accuracy = training_curves_figure(metrics).axes
    assert (loss.get_title(), loss.get_xlabel(), loss.get_ylabel()) == (
        "Loss", "epoch", "cross-entropy")
    assert accuracy.get_title() == "Accuracy" and accuracy.get_ylim() == (0, 1)
    drawn = {(ax.get_title(), line.get_label()): line
             for ax in (loss, accuracy) for line in ax.get_lines()}
    expected = {
        ("Loss", "train"): "train_loss",
        ("Loss", "validation"): "val_loss",
        ("Accuracy", "train accuracy"): "train_accuracy",
        ("Accuracy", "validation accuracy"): "val_accuracy",
        ("Accuracy", "validation balanced accuracy"): "val_balanced_accuracy",
    }
    assert set(drawn) == set(expected)
    for key, column in expected.items():
        np.testing.assert_array_equal(drawn[key].get_xdata(), [1, 2, 3])  # 1-based epochs
        np.testing.assert_array_equal(drawn[key].get_ydata(), metrics[column])
    assert [t.get_text() for t in loss.get_legend().get_texts()] == ["train", "validation"]


def test_plot_training_curves_writes_the_figure(tmp_path: Path) -> None:
    path = plot_training_curves(_metrics(), tmp_path / "curves.png")
    assert_drawn_png(path, size=(1000, 400))
