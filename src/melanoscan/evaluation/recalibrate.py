"""``melanoscan calibrate``: fit temperature and alert threshold on held-out data, into a bundle."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from melanoscan import taxonomy
from melanoscan.bundle import weights_sha256, write_metadata
from melanoscan.calibration import calibrate
from melanoscan.data.manifest import scan
from melanoscan.data.sources import read_sources
from melanoscan.evaluation.evaluate import EvaluationError, select_split, taxonomy_logits
from melanoscan.inference.predictor import Predictor

__all__ = ["calibrate_bundle"]


def calibrate_bundle(
    model: Predictor,
    data: Sequence[Path],
    *,
    split: str | None = None,
    target_sensitivity: float = 0.95,
    show_progress: bool = True,
) -> dict[str, Any]:
    """Fit the temperature and the melanoma alert threshold on ``data`` and save them.

    The logits come from ``model``'s backend, the one users run.

    Images the bundle was trained on (its ``train`` split, by content) are refused: calibrating
    on them would make the model look surer than it is. Its validation images are fine.

    Raises:
        EvaluationError: no usable image, training images among them, or no melanoma.
    """
    table = select_split(scan(read_sources(data), show_progress=show_progress), split)
    trained = model.training_images()
    trained_hashes = set(trained.loc[trained["split"] == "train", "content_hash"])
    overlap = table["content_hash"].isin(trained_hashes)
    if overlap.any():
        raise EvaluationError(
            f"{int(overlap.sum())} of these images were used to train the model; calibrate on "
            "held-out images (e.g. its validation split, or a split of new data)"
        )
    outputs = model.score_files(table["path"].astype(str).tolist(), show_progress=show_progress)
    plain = taxonomy_logits(outputs.logits["plain"], outputs.classes)
    readable = ~np.isnan(plain).any(axis=1)
    labels = table["label"].map(list(taxonomy.CLASSES).index).to_numpy()[readable]
    if not (labels == taxonomy.CLASSES.index(taxonomy.MELANOMA)).any():
        raise EvaluationError("no melanoma among the images: cannot choose an alert threshold")
    where = ", ".join(str(d) for d in data) + (f" (split {split})" if split else "")
    calibration = calibrate(plain[readable], labels, target_sensitivity, where)
    calibration["unreadable"] = len(outputs.unreadable)
    calibration["weights_sha256"] = weights_sha256(model.path)  # calibration_state reads it
    model.metadata.calibration = calibration
    write_metadata(model.path, model.metadata)
    return calibration
