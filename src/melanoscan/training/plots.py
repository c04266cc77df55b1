"""Training curves: train against validation loss and accuracy (the overfitting picture)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

__all__ = ["plot_training_curves", "training_curves_figure"]


def plot_training_curves(metrics: pd.DataFrame, path: Path) -> Path:
    """Write :func:`training_curves_figure` to the PNG ``path``; return ``path``."""
    training_curves_figure(metrics).savefig(path, dpi=100)
    return path


def training_curves_figure(metrics: pd.DataFrame) -> Figure:
    """Two panels (loss, accuracy) over epochs (1-based) from a ``metrics.csv`` table.

    Returns:
        The figure: train and validation loss on the left axes; train accuracy, validation
        accuracy and validation balanced accuracy on the right, in that order.
    """
    epochs = metrics["epoch"] + 1
    fig = Figure(figsize=(10, 4), layout="constrained")
    loss_ax, acc_ax = fig.subplots(1, 2)
    loss_ax.plot(epochs, metrics["train_loss"], "o-", label="train")
    loss_ax.plot(epochs, metrics["val_loss"], "o-", label="validation")
    loss_ax.set(title="Loss", xlabel="epoch", ylabel="cross-entropy")
    acc_ax.plot(epochs, metrics["train_accuracy"], "o-", label="train accuracy")
    acc_ax.plot(epochs, metrics["val_accuracy"], "o-", label="validation accuracy")
    acc_ax.plot(epochs, metrics["val_balanced_accuracy"], "s--",
                label="validation balanced accuracy")
    acc_ax.set(title="Accuracy", xlabel="epoch", ylim=(0, 1))
    for ax in (loss_ax, acc_ax):
        ax.grid(alpha=0.3)
        ax.legend()
    return fig
