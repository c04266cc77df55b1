"""The validation record of a finished run: predictions, metrics, confusion matrix."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import confusion_matrix, roc_auc_score
from torch import nn
from torch.utils.data import DataLoader

from melanoscan import taxonomy
from melanoscan.evaluation.calibration import (
    alert_threshold,
    expected_calibration_error,
    fit_temperature,
    softmax,
)
from melanoscan.evaluation.plots import plot_confusion_matrix
from melanoscan.training.datamodule import LesionDataModule

__all__ = ["calibrate", "validation_record"]


@torch.inference_mode()
def validation_record(
    model: nn.Module, datamodule: LesionDataModule, run_dir: Path
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Score ``model`` on the validation split, calibrate it there, write the record.

    Returns ``(metrics, calibration)`` for the bundle: accuracy, balanced accuracy, per-class
    recall, precision and support, the confusion matrix and the melanoma-vs-rest ROC AUC; and
    the temperature and melanoma alert threshold fitted on the same images (see
    :func:`calibrate`). ``validation_predictions.csv`` holds calibrated probabilities.
    """
    dataset = datamodule.val_set
    loader = DataLoader(dataset, batch_size=datamodule.config.batch_size, num_workers=0)
    batches, ok = [], []
    for images, _, _, batch_ok in loader:
        batches.append(model(images).float().numpy())
        ok.append(batch_ok.numpy())
    logits = np.concatenate(batches)
    readable = np.concatenate(ok).astype(bool)
    calibration = calibrate(
        logits[readable], dataset.labels[readable], datamodule.config.alert_sensitivity,
        fitted_on=f"validation split of training run {run_dir.name}",
    )
    probabilities = softmax(logits, calibration["temperature"])
    classes = list(taxonomy.CLASSES)
    table = pd.DataFrame({"path": dataset.paths, "label": [classes[i] for i in dataset.labels]})
    table["predicted"] = [classes[i] for i in probabilities.argmax(axis=1)]
    table["readable"] = readable
    for i, name in enumerate(classes):
        table[name] = probabilities[:, i]
    table.to_csv(run_dir / "validation_predictions.csv", index=False)
    labels = dataset.labels[readable]
    metrics = _metrics(labels, probabilities[readable], classes)
    metrics["unreadable"] = int((~readable).sum())
    confusion = np.asarray(metrics["confusion_matrix"])
    plot_confusion_matrix(confusion, classes, run_dir / "confusion_matrix_val.png",
                          title="Validation")
    return metrics, calibration


def calibrate(
    logits: np.ndarray, labels: np.ndarray, target_sensitivity: float, fitted_on: str
) -> dict[str, Any]:
    """Temperature (minimum log loss) and the melanoma alert threshold reaching the target.

    The threshold applies to the calibrated melanoma probability; it is ``None`` when the
    images hold no melanoma.
    """
    temperature = fit_temperature(logits, labels)
    calibrated = softmax(logits, temperature)
    melanoma = taxonomy.CLASSES.index(taxonomy.MELANOMA)
    is_melanoma = labels == melanoma
    threshold = None
    if is_melanoma.any():
        threshold = alert_threshold(calibrated[:, melanoma], is_melanoma, target_sensitivity)
    return {
        "temperature": temperature,
        "alert_threshold": threshold,
        "target_sensitivity": target_sensitivity,
        "fitted_on": f"{fitted_on} ({len(labels)} images, {int(is_melanoma.sum())} melanoma)",
        "ece_before": expected_calibration_error(softmax(logits), labels),
        "ece_after": expected_calibration_error(calibrated, labels),
    }


def _metrics(labels: np.ndarray, probabilities: np.ndarray, classes: list[str]) -> dict[str, Any]:
    predicted = probabilities.argmax(axis=1)
    confusion = confusion_matrix(labels, predicted, labels=range(len(classes)))
    support = confusion.sum(axis=1)
    predicted_count = confusion.sum(axis=0)
    diagonal = confusion.diagonal()
    present = support > 0
    per_class = {
        name: {
            "support": int(support[i]),
            "recall": float(diagonal[i] / support[i]) if support[i] else None,
            "precision": float(diagonal[i] / predicted_count[i]) if predicted_count[i] else None,
        }
        for i, name in enumerate(classes)
    }
    melanoma = classes.index(taxonomy.MELANOMA)
    is_melanoma = labels == melanoma
    auc = None
    if 0 < is_melanoma.sum() < len(labels):
        auc = float(roc_auc_score(is_melanoma, probabilities[:, melanoma]))
    return {
        "split": "val",
        "images": len(labels),
        "accuracy": float(diagonal.sum() / max(1, len(labels))),
        "balanced_accuracy": float((diagonal[present] / support[present]).mean())
        if present.any() else None,
        "melanoma_auc": auc,
        "per_class": per_class,
        "confusion_matrix": confusion.tolist(),
    }
