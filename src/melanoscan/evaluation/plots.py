"""Evaluation plots, drawn on :class:`~matplotlib.figure.Figure`: no pyplot, no global backend."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from sklearn.metrics import roc_auc_score, roc_curve

from melanoscan.calibration import expected_calibration_error
from melanoscan.taxonomy import DISPLAY_NAMES, MELANOMA

__all__ = [
    "confusion_matrix_figure",
    "plot_confusion_matrix",
    "plot_reliability",
    "plot_roc_curves",
    "reliability_figure",
    "roc_figure",
]


def plot_confusion_matrix(
    confusion: np.ndarray, classes: Sequence[str], path: Path, title: str = "Confusion matrix"
) -> Path:
    """Write :func:`confusion_matrix_figure` to the PNG ``path``; return ``path``."""
    confusion_matrix_figure(confusion, classes, title).savefig(path, dpi=100)
    return path


def confusion_matrix_figure(
    confusion: np.ndarray, classes: Sequence[str], title: str = "Confusion matrix"
) -> Figure:
    """Counts (left) and row-normalised recall (right); rows are true, columns predicted."""
    names = [DISPLAY_NAMES.get(c, c) for c in classes]
    support = confusion.sum(axis=1, keepdims=True)
    normalised = np.divide(confusion, support, out=np.zeros(confusion.shape), where=support > 0)
    size = 4 + 0.6 * len(classes)
    fig = Figure(figsize=(2 * size, size), layout="constrained")
    axes = fig.subplots(1, 2)
    panels = ((confusion, "counts", "d"), (normalised, "share of each true class", ".2f"))
    for ax, (values, subtitle, fmt) in zip(axes, panels, strict=True):
        ax.imshow(normalised, cmap="Blues", vmin=0, vmax=1)
        for (i, j), value in np.ndenumerate(values):
            colour = "white" if normalised[i, j] > 0.5 else "black"
            ax.text(j, i, format(value, fmt), ha="center", va="center", color=colour, fontsize=8)
        ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
        ax.set_yticks(range(len(names)), names)
        ax.set(title=f"{title} ({subtitle})", xlabel="predicted", ylabel="true")
    return fig


def _positive_index(classes: Sequence[str], positive: str) -> int:
    """Column of ``positive``; "melanoma" and its ISIC 2018 code "mel" stand for each other."""
    aliases = (MELANOMA, "mel") if positive in (MELANOMA, "mel") else (positive,)
    for name in (positive, *aliases):
        if name in classes:
            return list(classes).index(name)
    raise ValueError(f"positive class {positive!r} is not among the classes {list(classes)}")


def plot_roc_curves(
    labels: np.ndarray,
    probabilities: np.ndarray,
    classes: Sequence[str],
    path: Path,
    positive: str = MELANOMA,
    operating_points: Sequence[tuple[str, float, float]] = (),
) -> Path:
    """Write :func:`roc_figure` to the PNG ``path``; return ``path``.

    Raises:
        ValueError: ``positive`` is not among ``classes``.
    """
    roc_figure(labels, probabilities, classes, positive, operating_points).savefig(path, dpi=100)
    return path


def roc_figure(
    labels: np.ndarray,
    probabilities: np.ndarray,
    classes: Sequence[str],
    positive: str = MELANOMA,
    operating_points: Sequence[tuple[str, float, float]] = (),
) -> Figure:
    """One-vs-rest ROC of every class (left) and of ``positive`` against the rest (right).

    Args:
        labels: true class indices into ``classes``, shape (N,).
        probabilities: class probabilities, shape (N, len(classes)).
        classes: class names, in column order.
        positive: the class of the right panel ("mel" and "melanoma" are interchangeable).
        operating_points: ``(label, false positive rate, true positive rate)`` markers drawn
            on the right panel, e.g. the alert threshold.

    Returns:
        The figure: class curves on the left axes, ``positive``'s curve and the operating
        points on the right, the chance diagonal last on both.

    Raises:
        ValueError: ``positive`` is not among ``classes``.
    """
    labels = np.asarray(labels)
    probabilities = np.asarray(probabilities, dtype=np.float64)
    column = _positive_index(classes, positive)
    fig = Figure(figsize=(13, 6), layout="constrained")
    left, right = fig.subplots(1, 2)
    for index, name in enumerate(classes):
        truth = labels == index
        if truth.all() or not truth.any():
            continue
        fpr, tpr, _ = roc_curve(truth, probabilities[:, index])
        auc = roc_auc_score(truth, probabilities[:, index])
        left.plot(fpr, tpr, label=f"{DISPLAY_NAMES.get(name, name)} (AUC {auc:.3f})")
    left.set_title("One-vs-rest ROC per class")
    if left.get_legend_handles_labels()[0]:
        left.legend(loc="lower right", fontsize=8)

    name = DISPLAY_NAMES.get(classes[column], classes[column])
    truth = labels == column
    if truth.all() or not truth.any():
        right.set_title(f"{name} vs rest")
        right.text(
            0.5,
            0.5,
            "not defined (one class only)",
            ha="center",
            va="center",
            backgroundcolor="white",
        )
    else:
        fpr, tpr, _ = roc_curve(truth, probabilities[:, column])
        auc = roc_auc_score(truth, probabilities[:, column])
        right.plot(fpr, tpr, linewidth=2, label="ROC")
        for (label, point_fpr, point_tpr), marker in zip(
            operating_points, "osD^v<>P*X", strict=False
        ):
            right.plot(point_fpr, point_tpr, marker, markersize=9, linestyle="", label=label)
        right.set_title(f"{name} vs rest (AUC {auc:.3f})")
        right.legend(loc="lower right")
    for ax in (left, right):
        ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
        ax.set(
            xlim=(0, 1),
            ylim=(0, 1.01),
            xlabel="false positive rate (1 - specificity)",
            ylabel="true positive rate (sensitivity)",
        )
        ax.set_aspect("equal")
    return fig


def plot_reliability(
    labels: np.ndarray, curves: Mapping[str, np.ndarray], path: Path, bins: int = 15
) -> Path:
    """Write :func:`reliability_figure` to the PNG ``path``; return ``path``."""
    reliability_figure(labels, curves, bins).savefig(path, dpi=100)
    return path


def reliability_figure(
    labels: np.ndarray, curves: Mapping[str, np.ndarray], bins: int = 15
) -> Figure:
    """Reliability diagram of the top-class confidence, with a histogram of confidences below.

    Args:
        labels: true class indices, shape (N,).
        curves: named probability matrices of shape (N, classes), e.g. before and after
            temperature scaling.
        bins: number of equal-width confidence bins (as in the ECE).

    Returns:
        The figure: the diagonal, then one line per curve (mean confidence against accuracy
        of each non-empty bin) on the top axes; one confidence histogram per curve below.
    """
    labels = np.asarray(labels)
    edges = np.linspace(0.0, 1.0, bins + 1)
    fig = Figure(figsize=(7, 8), layout="constrained")
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=(3, 1))
    top.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1, label="perfect calibration")
    for name, probabilities in curves.items():
        probabilities = np.asarray(probabilities, dtype=np.float64)
        confidence = probabilities.max(axis=1)
        correct = probabilities.argmax(axis=1) == labels
        # Same binning as expected_calibration_error, so the plot and the legend agree.
        which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
        filled = [b for b in range(bins) if (which == b).any()]
        mean_confidence = [confidence[which == b].mean() for b in filled]
        accuracy = [correct[which == b].mean() for b in filled]
        ece = expected_calibration_error(probabilities, labels, bins)
        (line,) = top.plot(mean_confidence, accuracy, "o-", label=f"{name} (ECE {ece:.3f})")
        bottom.hist(confidence, bins=edges, histtype="step", linewidth=1.5, color=line.get_color())
    top.set(xlim=(0, 1), ylim=(0, 1.01), ylabel="accuracy", title="Reliability (top-class)")
    top.legend(loc="upper left")
    bottom.set(xlabel="confidence", ylabel="images")
    return fig
