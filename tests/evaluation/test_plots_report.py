"""ROC, reliability and confusion plots (what they draw), and the HTML evaluation report."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from matplotlib.axes import Axes
from matplotlib.colors import to_rgb
from matplotlib.lines import Line2D

from melanoscan.calibration import softmax
from melanoscan.evaluation.plots import (
    confusion_matrix_figure,
    plot_reliability,
    plot_roc_curves,
    reliability_figure,
    roc_figure,
)
from melanoscan.evaluation.report import format_estimate, write_html_report
from melanoscan.taxonomy import DISPLAY_NAMES
from tests.conftest import assert_drawn_png

CLASSES = ("melanoma", "nevus", "basal_cell_carcinoma")


def _case(seed: int = 0, n: int = 60) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, len(CLASSES), size=n)
    logits = rng.normal(0, 1, size=(n, len(CLASSES)))
    logits[np.arange(n), labels] += 1.5
    return labels, softmax(logits)


def _auc_by_ranks(positive: np.ndarray, scores: np.ndarray) -> float:
    """ROC AUC as the share of (positive, negative) pairs ranked right, ties counting half."""
    pos, neg = scores[positive][:, None], scores[~positive][None, :]
    return float((pos > neg).mean() + 0.5 * (pos == neg).mean())


def _curves(ax: Axes) -> list[Line2D]:
    """The lines of ``ax`` that carry a legend label (not the chance diagonal)."""
    return [line for line in ax.get_lines() if not line.get_label().startswith("_")]


def _is_diagonal(line: Line2D) -> bool:
    return line.get_xydata().tolist() == [[0.0, 0.0], [1.0, 1.0]]


def test_roc_figure_draws_every_class_with_its_auc_and_the_operating_point() -> None:
    labels, probabilities = _case()
    fig = roc_figure(labels, probabilities, CLASSES,
                     operating_points=[("alert threshold", 0.2, 0.9)])
    left, right = fig.axes
    assert left.get_title() == "One-vs-rest ROC per class"
    assert left.get_xlabel() == "false positive rate (1 - specificity)"
    assert right.get_ylabel() == "true positive rate (sensitivity)"
    curves = _curves(left)
    assert len(curves) == len(CLASSES) and _is_diagonal(left.get_lines()[-1])
    aucs = []
    for index, line in enumerate(curves):
        auc = _auc_by_ranks(labels == index, probabilities[:, index])
        aucs.append(auc)
        assert line.get_label() == f"{DISPLAY_NAMES[CLASSES[index]]} (AUC {auc:.3f})"
        fpr, tpr = np.asarray(line.get_xdata()), np.asarray(line.get_ydata())
        assert (fpr[0], tpr[0], fpr[-1], tpr[-1]) == (0, 0, 1, 1)
        assert (np.diff(fpr) >= 0).all() and (np.diff(tpr) >= 0).all()
        assert np.trapezoid(tpr, fpr) == pytest.approx(auc)  # the area drawn is the AUC
    assert min(aucs) > 0.7  # the case's true class gets +1.5 logits: clearly above chance

    roc, point = _curves(right)
    assert right.get_title() == f"Melanoma vs rest (AUC {aucs[0]:.3f})"
    np.testing.assert_array_equal(roc.get_xydata(), curves[0].get_xydata())
    assert point.get_label() == "alert threshold"
    assert point.get_xydata().tolist() == [[0.2, 0.9]] and point.get_linestyle() == "None"
    assert [t.get_text() for t in right.get_legend().get_texts()] == ["ROC", "alert threshold"]


def test_roc_figure_survives_a_positive_class_without_positives() -> None:
    labels, probabilities = _case()
    labels[labels == 0] = 1  # no melanoma left: the right panel cannot be drawn
    left, right = roc_figure(labels, probabilities, CLASSES).axes
    assert [line.get_label().split(" (")[0] for line in _curves(left)] == [
        "Nevus", "Basal cell carcinoma"]
    assert right.get_title() == "Melanoma vs rest"
    assert [t.get_text() for t in right.texts] == ["not defined (one class only)"]
    assert len(right.get_lines()) == 1 and _is_diagonal(right.get_lines()[0])


def test_roc_figure_accepts_isic2018_codes(tmp_path: Path) -> None:
    labels, probabilities = _case()
    codes = ("mel", "nv", "bcc")
    left, right = roc_figure(labels, probabilities, codes).axes
    auc = _auc_by_ranks(labels == 0, probabilities[:, 0])
    assert right.get_title() == f"mel vs rest (AUC {auc:.3f})"  # "melanoma" is "mel" here
    assert _curves(left)[0].get_label() == f"mel (AUC {auc:.3f})"
    with pytest.raises(ValueError, match="not among"):
        plot_roc_curves(labels, probabilities, codes, tmp_path / "x.png", positive="df")
    assert not (tmp_path / "x.png").exists()


def test_plot_roc_curves_writes_the_figure_as_png(tmp_path: Path) -> None:
    labels, probabilities = _case()
    path = plot_roc_curves(labels, probabilities, CLASSES, tmp_path / "roc.png")
    assert_drawn_png(path, size=(1300, 600))


def test_reliability_figure_bins_confidence_against_accuracy_by_hand(tmp_path: Path) -> None:
    # Top-class confidence 0.55 twice (one right) and 0.95 four times (three right).
    confident = np.array([[0.55, 0.45], [0.45, 0.55], *[[0.95, 0.05]] * 3, [0.05, 0.95]])
    labels = np.array([0, 0, 0, 0, 0, 0])
    flat = np.tile([0.75, 0.25], (6, 1))  # every image at 0.75, and right
    curves = {"confident": confident, "flat": flat}
    fig = reliability_figure(labels, curves, bins=10)
    top, bottom = fig.axes
    assert top.get_title() == "Reliability (top-class)" and top.get_ylabel() == "accuracy"
    assert bottom.get_xlabel() == "confidence" and bottom.get_ylabel() == "images"
    diagonal, first, second = top.get_lines()
    assert diagonal.get_label() == "perfect calibration" and _is_diagonal(diagonal)
    np.testing.assert_allclose(first.get_xydata(), [[0.55, 0.5], [0.95, 0.75]])
    # ECE: 2/6 * |0.55 - 0.5| + 4/6 * |0.95 - 0.75| = 0.15
    assert first.get_label() == "confident (ECE 0.150)"
    np.testing.assert_allclose(second.get_xydata(), [[0.75, 1.0]])
    assert second.get_label() == "flat (ECE 0.250)"
    # One step histogram per curve, in its colour; the confident one peaks at 4 images.
    assert len(bottom.patches) == 2
    assert bottom.patches[0].get_xy()[:, 1].max() == 4
    assert bottom.patches[1].get_xy()[:, 1].max() == 6
    assert bottom.patches[0].get_edgecolor()[:3] == pytest.approx(to_rgb(first.get_color()))
    assert_drawn_png(plot_reliability(labels, curves, tmp_path / "r.png", bins=10),
                     size=(700, 800))


def test_confusion_matrix_figure_writes_counts_and_row_shares() -> None:
    confusion = np.array([[3, 1, 0], [0, 2, 2], [0, 0, 0]])
    counts, shares = confusion_matrix_figure(confusion, CLASSES, title="Val").axes
    assert counts.get_title() == "Val (counts)"
    assert shares.get_title() == "Val (share of each true class)"
    assert (counts.get_xlabel(), counts.get_ylabel()) == ("predicted", "true")
    names = ["Melanoma", "Nevus", "Basal cell carcinoma"]
    assert [t.get_text() for t in counts.get_xticklabels()] == names
    assert [t.get_text() for t in shares.get_yticklabels()] == names
    assert [t.get_text() for t in counts.texts] == ["3", "1", "0", "0", "2", "2", "0", "0", "0"]
    assert [t.get_text() for t in shares.texts] == [
        "0.75", "0.25", "0.00", "0.00", "0.50", "0.50", "0.00", "0.00", "0.00"]
    shading = [[0.75, 0.25, 0.0], [0.0, 0.5, 0.5], [0.0, 0.0, 0.0]]  # an empty row stays 0
    for ax in (counts, shares):
        np.testing.assert_allclose(ax.images[0].get_array(), shading)
    assert counts.texts[0].get_color() == "white" and counts.texts[1].get_color() == "black"


def test_format_estimate() -> None:
    assert format_estimate({"value": 0.8123, "ci95": [0.7406, 0.8734]}) == "0.812 [0.741, 0.873]"
    assert format_estimate(None) == "—"
    assert format_estimate({"value": 0.5, "ci95": None}) == "0.500"


def _metrics(accuracy: dict[str, Any]) -> dict[str, Any]:
    def est(value: float) -> dict[str, Any]:
        return {"value": value, "ci95": [value - 0.05, value + 0.05]}

    return {
        "images": 60,
        "accuracy": accuracy,
        "balanced_accuracy": est(0.7),
        "macro_auc": None,
        "per_class": {
            "melanoma": {"precision": 0.5, "recall": 0.25, "f1": 0.333, "support": 4, "auc": 0.9},
            "nevus": {"precision": None, "recall": 0.0, "f1": None, "support": 0, "auc": None},
        },
        "confusion_matrix": [[1, 3], [0, 0]],
        "melanoma": {
            "positives": 4,
            "auc": est(0.9),
            "threshold": 0.25,
            "sensitivity": est(0.75),
            "specificity": est(0.6),
            "specificity_at_sensitivity": {"0.90": 0.55, "0.95": None},
        },
        "calibration": {"ece_uncalibrated": 0.12, "ece_calibrated": 0.04, "temperature": 1.7},
    }


def test_write_html_report(tmp_path: Path) -> None:
    skipped = [{"path": "bad/<script>alert(1)</script>.jpg", "reason": "cannot decode"}]
    skipped += [{"path": f"broken_{i}.jpg", "reason": "empty"} for i in range(55)]
    report = {
        "schema_version": 1,
        "model": {
            "name": "effnet",
            "path": "models/effnet.pt",
            "calibration": {
                "temperature": 1.7,
                "alert_threshold": 0.25,
                "target_sensitivity": 0.95,
                "fitted_on": "val",
            },
        },
        "data": {
            "sources": ["data/isic"],
            "split": "test",
            "images_found": 70,
            "scored": 60,
            "skipped": skipped,
            "training_overlap": {"count": 3, "scored": False, "paths": ["a.jpg", "b.jpg", "c.jpg"]},
        },
        "taxonomy": "isic9",
        "classes": ["melanoma", "nevus"],
        "mapping_note": "none",
        "results": {
            "plain": _metrics({"value": 0.8123, "ci95": [0.7406, 0.8734]}),
            "tta": _metrics({"value": 0.8345, "ci95": [0.7702, 0.8891]}),
        },
    }
    (tmp_path / "roc.png").write_bytes(b"png")
    page = write_html_report(report, tmp_path, [tmp_path / "roc.png"]).read_text()
    assert "Research tool, not a medical device." in page
    assert "3 test images were also in the model's training data" in page
    assert "left out" in page
    assert "0.812 [0.741, 0.873]" in page and "0.835 [0.770, 0.889]" in page
    assert "specificity at 90% sensitivity" in page and "0.550" in page
    assert "<th>plain</th><th>tta</th>" in page
    assert '<img src="roc.png"' in page and "<figcaption>roc.png</figcaption>" in page
    assert "&lt;script&gt;" in page and "<script>" not in page
    assert "... and 6 more" in page
    assert "—" in page
    assert "http" not in page  # self-contained: no external assets
