"""Score a model bundle on labelled data: honest figures, intervals, plots and a report.

Images the bundle was trained or validated on (same decoded pixels) are left out of the score
by default and always reported: a test that overlaps training is not a test.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from melanoscan import taxonomy
from melanoscan.calibration import expected_calibration_error, softmax
from melanoscan.data.manifest import Manifest, scan
from melanoscan.data.sources import read_sources
from melanoscan.evaluation.metrics import classification_metrics
from melanoscan.gate import FLAGGED, NOT_DERMOSCOPY, POOR_QUALITY, GateVerdict
from melanoscan.inference.predictor import Predictor

__all__ = [
    "SCHEMA_VERSION",
    "Evaluation",
    "EvaluationError",
    "evaluate",
    "scoring_space",
    "select_split",
    "taxonomy_logits",
]

SCHEMA_VERSION = 1
MAPPING_NOTE = (
    "9-class predictions scored on 7-class ISIC 2018 labels: probabilities are summed per code "
    "(akiec = actinic keratosis + squamous cell carcinoma, bkl = pigmented benign keratosis + "
    "seborrheic keratosis); see docs/TAXONOMY.md"
)


class EvaluationError(ValueError):
    """Nothing can be scored (no images, an unknown split, everything overlaps training)."""


@dataclass
class Evaluation:
    """A finished evaluation.

    Args:
        report: the JSON-ready report (schema in docs/EVALUATION.md).
        labels: true class index per scored image, in ``report["classes"]``.
        probabilities: calibrated probabilities per result set (``plain``, ``tta``).
        uncalibrated: the same before temperature scaling.
        table: the scored images with their predictions.
    """

    report: dict[str, Any]
    labels: np.ndarray
    probabilities: dict[str, np.ndarray]
    uncalibrated: dict[str, np.ndarray]
    table: pd.DataFrame


def scoring_space(table: pd.DataFrame) -> tuple[str, list[str], np.ndarray]:
    """``(taxonomy, classes, label indices)``: 9 classes if every label names one class exactly,
    else the 7 ISIC 2018 codes (the finest resolution every label has)."""
    exact = [
        taxonomy.is_exact(n, t) for t, n in zip(table["taxonomy"], table["label"], strict=True)
    ]
    if all(exact):
        classes = list(taxonomy.CLASSES)
        return "isic9", classes, table["label"].map(classes.index).to_numpy()
    codes = list(taxonomy.ISIC2018_CODES)
    labels = table["label"].map(lambda name: codes.index(taxonomy.to_isic2018(name)))
    return "isic2018", codes, labels.to_numpy()


def taxonomy_logits(logits: np.ndarray, classes: Sequence[str]) -> np.ndarray:
    """``logits`` with columns in ``classes`` order, put in :data:`taxonomy.CLASSES` order.

    Labels are indexed by the taxonomy, so a model whose classes come in another order (or are
    other classes) must not be scored by column position.

    Raises:
        EvaluationError: the model's classes are not the taxonomy's.
    """
    if sorted(classes) != sorted(taxonomy.CLASSES):
        raise EvaluationError(
            f"the model's classes ({', '.join(classes)}) are not melanoscan's "
            f"({', '.join(taxonomy.CLASSES)}): it cannot be scored on these labels"
        )
    return logits[:, [list(classes).index(name) for name in taxonomy.CLASSES]]


def evaluate(
    model: Predictor,
    data: Sequence[Path],
    *,
    split: str | None = None,
    tta: bool = False,
    score_training_overlap: bool = False,
    bootstrap_samples: int = 1000,
    show_progress: bool = True,
) -> Evaluation:
    """Score ``model`` on the labelled images of ``data`` (optionally one split of them).

    The images go through ``model`` as ``melanoscan predict`` sends them, on its backend (the
    report's ``model.backend``), gate included.
    """
    manifest = scan(read_sources(data), show_progress=show_progress)
    table = select_split(manifest, split)
    trained = model.training_images()
    # Same pixels, or the same ISIC id (a resized copy in another archive is the same image).
    overlap = table["content_hash"].isin(set(trained["content_hash"]))
    if "image_id" in trained.columns:
        overlap |= table["image_id"].isin(set(trained["image_id"].dropna()))
    overlap_paths = sorted(table.loc[overlap, "path"].astype(str))
    if not score_training_overlap:
        table = table[~overlap.to_numpy()]
    if table.empty:
        raise EvaluationError(
            "nothing left to score: every image was also in the model's training data"
            if overlap.any() else "no readable labelled image in the given data"
        )
    table = table.reset_index(drop=True)
    space, classes, labels = scoring_space(table)
    outputs = model.score_files(table["path"].astype(str).tolist(), tta=tta,
                                show_progress=show_progress)
    logits = {name: taxonomy_logits(values, outputs.classes)
              for name, values in outputs.logits.items()}
    unreadable = outputs.unreadable
    skipped = [vars(s) for s in manifest.skipped] + unreadable
    keep = ~table["path"].isin({s["path"] for s in unreadable}).to_numpy()
    verdicts = ([v for v, k in zip(outputs.verdicts, keep, strict=True) if k]
                if outputs.verdicts else [])
    table, labels = table[keep].reset_index(drop=True), labels[keep]
    calibration = model.metadata.calibration
    probabilities, uncalibrated, results = {}, {}, {}
    for name, values in logits.items():
        raw = _to_space(softmax(values[keep]), space)
        calibrated = _to_space(softmax(values[keep], model.temperature), space)
        probabilities[name], uncalibrated[name] = calibrated, raw
        results[name] = classification_metrics(
            labels, calibrated, classes,
            positive_class="melanoma" if space == "isic9" else "mel",
            alert_threshold=calibration.get("alert_threshold"),
            samples=bootstrap_samples,
        )
        results[name]["calibration"] = {
            "ece_uncalibrated": expected_calibration_error(raw, labels),
            "ece_calibrated": expected_calibration_error(calibrated, labels)
            if calibration.get("temperature") else None,
            "temperature": calibration.get("temperature"),
        }
    gate_report = _gate_report(
        model.gate is not None, verdicts, table, labels, probabilities, classes, space,
        calibration.get("alert_threshold"), bootstrap_samples,
    )
    report = {
        "schema_version": SCHEMA_VERSION,
        "model": {"name": model.name, "path": str(model.path), "backend": outputs.backend,
                  "calibration": calibration},
        "data": {
            "sources": [str(d) for d in data],
            "split": split,
            "images_found": len(manifest) + len(manifest.skipped),
            "scored": len(table),
            "skipped": skipped,
            "training_overlap": {
                "count": int(overlap.sum()),
                "scored": score_training_overlap,
                "paths": overlap_paths,
            },
        },
        "taxonomy": space,
        "classes": classes,
        "mapping_note": MAPPING_NOTE if space == "isic2018" else "",
        "results": results,
        "gate": gate_report,
    }
    scored = table[["path", "label", "content_hash"]].copy()
    if verdicts:
        scored["gate"] = [v.verdict if v else "" for v in verdicts]
        scored["gate_score"] = [v.score if v else None for v in verdicts]
    for i, name in enumerate(classes):
        scored[name] = probabilities["plain"][:, i]
    return Evaluation(report, labels, probabilities, uncalibrated, scored)


def _gate_report(
    available: bool,
    verdicts: list[GateVerdict | None],
    table: pd.DataFrame,
    labels: np.ndarray,
    probabilities: dict[str, np.ndarray],
    classes: list[str],
    space: str,
    alert_threshold: float | None,
    samples: int,
) -> dict[str, Any]:
    """How many scored images the gate flags, which, and the figures without them."""
    if not available:
        return {"available": False}
    names = [v.verdict if v else "" for v in verdicts]
    flagged = np.array([n in FLAGGED for n in names], dtype=bool)
    report: dict[str, Any] = {
        "available": True,
        "flagged": int(flagged.sum()),
        "not_dermoscopy": names.count(NOT_DERMOSCOPY),
        "poor_quality": names.count(POOR_QUALITY),
        "flagged_images": [
            {"path": str(path), "verdict": v.verdict, "reason": v.reason}
            for path, v in zip(table["path"], verdicts, strict=True) if v and v.flagged
        ],
        "results_without_flagged": None,
    }
    if flagged.any() and (~flagged).any():
        report["results_without_flagged"] = {
            name: classification_metrics(
                labels[~flagged], values[~flagged], classes,
                positive_class="melanoma" if space == "isic9" else "mel",
                alert_threshold=alert_threshold, samples=samples,
            )
            for name, values in probabilities.items()
        }
    return report


def select_split(manifest: Manifest, split: str | None) -> pd.DataFrame:
    table = manifest.images
    if split is None:
        return table
    available = sorted(str(s) for s in table["split"].dropna().unique())
    chosen = table[table["split"].astype(str).str.lower() == split.lower()]
    if chosen.empty:
        raise EvaluationError(
            f"no image in split {split!r}; the data has: {', '.join(available) or 'no splits'}"
        )
    return chosen


def _to_space(probabilities: np.ndarray, space: str) -> np.ndarray:
    return taxonomy.isic2018_probabilities(probabilities) if space == "isic2018" else probabilities
