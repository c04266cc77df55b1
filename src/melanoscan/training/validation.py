"""The validation record of a finished run: predictions, metrics, confusion matrix."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.utils.data import DataLoader

from melanoscan import taxonomy
from melanoscan.calibration import calibrate, softmax
from melanoscan.evaluation.metrics import classification_metrics
from melanoscan.evaluation.plots import plot_confusion_matrix
from melanoscan.files import write_csv
from melanoscan.training.datamodule import LesionDataModule

__all__ = ["validation_record"]


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
    write_csv(table, run_dir / "validation_predictions.csv")
    labels = dataset.labels[readable]
    metrics = _metrics(labels, probabilities[readable], classes)
    metrics["unreadable"] = int((~readable).sum())
    confusion = np.asarray(metrics["confusion_matrix"])
    plot_confusion_matrix(confusion, classes, run_dir / "confusion_matrix_val.png",
                          title="Validation")
    return metrics, calibration


def _metrics(labels: np.ndarray, probabilities: np.ndarray, classes: list[str]) -> dict[str, Any]:
    """The bundle's validation block: the evaluation figures, without bootstrap intervals."""
    full = classification_metrics(labels, probabilities, classes,
                                  positive_class=taxonomy.MELANOMA, alert_threshold=None,
                                  samples=0)
    auc = full["melanoma"]["auc"]
    return {
        "split": "val",
        "images": full["images"],
        "accuracy": full["accuracy"]["value"],
        "balanced_accuracy": full["balanced_accuracy"]["value"],
        "melanoma_auc": auc["value"] if auc else None,
        "per_class": {
            name: {key: figures[key] for key in ("support", "recall", "precision")}
            for name, figures in full["per_class"].items()
        },
        "confusion_matrix": full["confusion_matrix"],
    }
