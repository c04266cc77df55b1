"""ROC and reliability plots, and the HTML evaluation report, on small synthetic cases."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from melanoscan.calibration import softmax
from melanoscan.evaluation.plots import plot_reliability, plot_roc_curves
from melanoscan.evaluation.report import format_estimate, write_html_report

CLASSES = ("melanoma", "nevus", "basal_cell_carcinoma")


def _case(seed: int = 0, n: int = 60) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, len(CLASSES), size=n)
    logits = rng.normal(0, 1, size=(n, len(CLASSES)))
    logits[np.arange(n), labels] += 1.5
    return labels, softmax(logits)


def _is_png(path: Path) -> bool:
    return path.stat().st_size > 1000 and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_roc_curves_writes_a_png_with_operating_points(tmp_path: Path) -> None:
    labels, probabilities = _case()
    path = plot_roc_curves(
        labels,
        probabilities,
        CLASSES,
        tmp_path / "roc.png",
        operating_points=[("alert threshold", 0.2, 0.9)],
    )
    assert _is_png(path)


def test_plot_roc_curves_survives_a_positive_class_without_positives(tmp_path: Path) -> None:
    labels, probabilities = _case()
    labels[labels == 0] = 1  # no melanoma left: the right panel cannot be drawn
    assert _is_png(plot_roc_curves(labels, probabilities, CLASSES, tmp_path / "roc.png"))


def test_plot_roc_curves_accepts_isic2018_codes(tmp_path: Path) -> None:
    labels, probabilities = _case()
    codes = ("mel", "nv", "bcc")
    assert _is_png(plot_roc_curves(labels, probabilities, codes, tmp_path / "roc.png"))
    with pytest.raises(ValueError, match="not among"):
        plot_roc_curves(labels, probabilities, codes, tmp_path / "x.png", positive="df")


def test_plot_reliability_two_curves(tmp_path: Path) -> None:
    labels, probabilities = _case()
    sharpened = softmax(np.log(probabilities), temperature=0.5)
    curves = {"uncalibrated": sharpened, "temperature-scaled": probabilities}
    assert _is_png(plot_reliability(labels, curves, tmp_path / "reliability.png", bins=10))


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
