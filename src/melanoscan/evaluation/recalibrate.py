"""``melanoscan calibrate``: fit temperature and alert threshold on held-out data, into a bundle."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from melanoscan import taxonomy
from melanoscan.bundle import Bundle, write_metadata
from melanoscan.calibration import calibrate
from melanoscan.data.manifest import scan
from melanoscan.data.sources import read_sources
from melanoscan.evaluation.evaluate import EvaluationError, select_split
from melanoscan.evaluation.inference import predict_logits

__all__ = ["calibrate_bundle"]


def calibrate_bundle(
    bundle: Bundle,
    data: Sequence[Path],
    *,
    split: str | None = None,
    target_sensitivity: float = 0.95,
    show_progress: bool = True,
) -> dict[str, Any]:
    """Fit the temperature and the melanoma alert threshold on ``data`` and save them.

    Images the bundle was trained on (its ``train`` split, by content) are refused: calibrating
    on them would make the model look surer than it is. Its validation images are fine.

    Raises:
        EvaluationError: no usable image, training images among them, or no melanoma.
    """
    table = select_split(scan(read_sources(data), show_progress=show_progress), split)
    trained = bundle.training_images()
    trained_hashes = set(trained.loc[trained["split"] == "train", "content_hash"])
    overlap = table["content_hash"].isin(trained_hashes)
    if overlap.any():
        raise EvaluationError(
            f"{int(overlap.sum())} of these images were used to train the model; calibrate on "
            "held-out images (e.g. its validation split, or a split of new data)"
        )
    logits, unreadable = predict_logits(bundle, table.reset_index(drop=True),
                                        show_progress=show_progress)
    readable = ~np.isnan(logits["plain"]).any(axis=1)
    labels = table["label"].map(list(taxonomy.CLASSES).index).to_numpy()[readable]
    if not (labels == taxonomy.CLASSES.index(taxonomy.MELANOMA)).any():
        raise EvaluationError("no melanoma among the images: cannot choose an alert threshold")
    where = ", ".join(str(d) for d in data) + (f" (split {split})" if split else "")
    calibration = calibrate(logits["plain"][readable], labels, target_sensitivity, where)
    calibration["unreadable"] = len(unreadable)
    bundle.metadata.calibration = calibration
    write_metadata(bundle.path, bundle.metadata)
    return calibration
