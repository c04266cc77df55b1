"""Evaluation plots."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from melanoscan.taxonomy import DISPLAY_NAMES

__all__ = ["plot_confusion_matrix"]


def plot_confusion_matrix(
    confusion: np.ndarray, classes: Sequence[str], path: Path, title: str = "Confusion matrix"
) -> Path:
    """Counts (left) and row-normalised recall (right); rows are true, columns predicted."""
    names = [DISPLAY_NAMES.get(c, c) for c in classes]
    support = confusion.sum(axis=1, keepdims=True)
    normalised = np.divide(confusion, support, out=np.zeros(confusion.shape), where=support > 0)
    size = 4 + 0.6 * len(classes)
    fig, axes = plt.subplots(1, 2, figsize=(2 * size, size), constrained_layout=True)
    panels = ((confusion, "counts", "d"), (normalised, "share of each true class", ".2f"))
    for ax, (values, subtitle, fmt) in zip(axes, panels, strict=True):
        ax.imshow(normalised, cmap="Blues", vmin=0, vmax=1)
        for (i, j), value in np.ndenumerate(values):
            colour = "white" if normalised[i, j] > 0.5 else "black"
            ax.text(j, i, format(value, fmt), ha="center", va="center", color=colour, fontsize=8)
        ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
        ax.set_yticks(range(len(names)), names)
        ax.set(title=f"{title} ({subtitle})", xlabel="predicted", ylabel="true")
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
