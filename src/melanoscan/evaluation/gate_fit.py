"""Fitting the dermoscopy gate of a bundle: at the end of training, or with ``calibrate``.

The gate is fitted on the model's training images and its threshold set on held-out dermoscopy
(the validation split). Training uses no negative example; ``calibrate --gate-only --negatives``
adds the contrast score, learnt against example non-dermoscopy images (the shipped bundle's
came from the ``dev`` split of ``benchmarks/negatives.py``). Images are capped (source-balanced
samples) so that fitting costs about a minute on two CPU cores.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from melanoscan.bundle import read_metadata, read_training_images, write_metadata
from melanoscan.data.images import is_image_file
from melanoscan.data.manifest import scan
from melanoscan.data.sources import read_sources
from melanoscan.evaluation.evaluate import EvaluationError, select_split
from melanoscan.gate import Gate, QualityLimits, fit_contrast, fit_statistics, save_gate
from melanoscan.inference.predictor import Predictor

__all__ = [
    "MAX_FIT_IMAGES",
    "MAX_THRESHOLD_IMAGES",
    "MIN_FIT_IMAGES",
    "MIN_THRESHOLD_IMAGES",
    "fit_gate",
    "fit_training_gate",
    "read_negatives",
    "refit_gate",
]

MAX_FIT_IMAGES = 1500
MAX_THRESHOLD_IMAGES = 1000
MIN_FIT_IMAGES = 100
MIN_THRESHOLD_IMAGES = 30
MIN_NEGATIVES = 10


def fit_gate(
    bundle_dir: Path,
    fit_images: pd.DataFrame,
    threshold_images: pd.DataFrame,
    *,
    fitted_on: str = "",
    negatives: pd.DataFrame | None = None,
    negatives_from: str = "",
    max_fit: int = MAX_FIT_IMAGES,
    max_threshold: int = MAX_THRESHOLD_IMAGES,
    seed: int = 0,
    show_progress: bool = True,
) -> Gate:
    """Fit the gate of the bundle at ``bundle_dir`` and write it into the bundle.

    Args:
        bundle_dir: the bundle (its ``gate.npz`` and the ``gate`` block of bundle.json are
            replaced, each atomically).
        fit_images: dermoscopy images the statistics are fitted on (the training images):
            ``path``, and optionally ``source``, ``width``, ``height``.
        threshold_images: other dermoscopy images (the validation split) the threshold is set
            on.
        fitted_on: a description of the data, recorded in the bundle.
        negatives: example non-dermoscopy images (``path``) for the contrast score; ``None``:
            the gate has only the distance.
        negatives_from: where the negatives came from, recorded in the bundle.
        max_fit: at most this many fitting images (a sample balanced over ``source``).
        max_threshold: at most this many threshold images.
        seed: the sampling seed.
        show_progress: progress bars.

    Raises:
        ValueError: too few readable images.
    """
    # The backend users run (ONNX when exported), without the gate being replaced.
    model = Predictor(bundle_dir, use_gate=False)
    fit = _sample(fit_images, max_fit, seed)
    held_out = _sample(threshold_images, max_threshold, seed)
    fit_features = _features(model, fit, show_progress)
    held_features = _features(model, held_out, show_progress)
    quality = QualityLimits(min_side=max(32, model.preprocessing.image_size // 2))
    gate = fit_statistics(fit_features, held_features, quality=quality,
                          info={"fitted_on": fitted_on})
    if negatives is not None:
        negative_features = _features(model, negatives, show_progress)
        fit_contrast(gate, fit_features, negative_features, held_features,
                     info={"contrast_fitted_on": negatives_from})
    save_gate(model.path, gate, model.metadata)
    write_metadata(model.path, model.metadata)
    return gate


def fit_training_gate(
    bundle_dir: Path, table: pd.DataFrame, run_name: str, show_progress: bool = True
) -> Gate | None:
    """The gate of a freshly trained bundle: train split fits, val split sets the threshold.

    Never stops a finished run: with too few images, or on any error, the bundle is left
    without a gate and a warning says why.
    """
    original = table[table.get("augmented_from", pd.Series(index=table.index)).isna()]
    train = original[original["split"] == "train"]
    val = original[original["split"] == "val"]
    if len(train) < MIN_FIT_IMAGES or len(val) < MIN_THRESHOLD_IMAGES:
        warnings.warn(
            f"{len(train)} training and {len(val)} validation images: too few to fit the "
            f"dermoscopy gate (needs {MIN_FIT_IMAGES} and {MIN_THRESHOLD_IMAGES}); the bundle "
            "has none", stacklevel=2)
        return None
    try:
        return fit_gate(bundle_dir, train, val, show_progress=show_progress,
                        fitted_on=f"training split (fit) and validation split (threshold) of "
                                  f"training run {run_name}")
    except (OSError, ValueError) as exc:
        warnings.warn(f"the dermoscopy gate could not be fitted ({exc}); the bundle has none",
                      stacklevel=2)
        return None


def refit_gate(
    bundle_dir: Path,
    data: Sequence[Path],
    *,
    split: str | None = None,
    negatives: Path | None = None,
    show_progress: bool = True,
) -> Gate:
    """Refit a bundle's gate from the data it was trained on (``calibrate --gate-only``).

    The images of ``data`` that the bundle trained on (its ``train`` split, by content) fit the
    statistics; its validation images set the threshold (when ``data`` holds fewer than
    :data:`MIN_THRESHOLD_IMAGES` of them, every other image of ``data`` does). Test images are
    thus left alone when the bundle has a validation split. With ``negatives`` (see
    :func:`read_negatives`) the gate also gets the contrast score.

    Raises:
        EvaluationError: too few of either among ``data``, or fewer than
            :data:`MIN_NEGATIVES` negatives.
    """
    read_metadata(Path(bundle_dir))  # a missing or broken bundle fails here, by name
    negative_table = read_negatives(negatives) if negatives is not None else None
    table = select_split(scan(read_sources(data), show_progress=show_progress), split)
    trained = read_training_images(Path(bundle_dir))
    in_train = table["content_hash"].isin(set(trained.loc[trained["split"] == "train",
                                                          "content_hash"]))
    in_val = table["content_hash"].isin(set(trained.loc[trained["split"] == "val",
                                                        "content_hash"])) & ~in_train
    fit = table[in_train]
    held_out = table[in_val] if in_val.sum() >= MIN_THRESHOLD_IMAGES else table[~in_train]
    if len(fit) < MIN_FIT_IMAGES or len(held_out) < MIN_THRESHOLD_IMAGES:
        raise EvaluationError(
            f"the gate is fitted on the model's training images and thresholded on other "
            f"dermoscopy: {len(fit)} training and {len(held_out)} other images found (needs "
            f"{MIN_FIT_IMAGES} and {MIN_THRESHOLD_IMAGES}); pass the data it was trained on")
    where = ", ".join(str(d) for d in data) + (f" (split {split})" if split else "")
    try:
        return fit_gate(Path(bundle_dir), fit, held_out, show_progress=show_progress,
                        fitted_on=f"{where}: the model's training images (fit) and the others "
                                  "(threshold)",
                        negatives=negative_table, negatives_from=str(negatives or ""))
    except ValueError as exc:
        raise EvaluationError(str(exc)) from None


def read_negatives(path: Path) -> pd.DataFrame:
    """Example non-dermoscopy images: every image under a folder, or the ``path`` column of a
    CSV (relative paths are read from the CSV's folder).

    Raises:
        EvaluationError: unreadable CSV, no ``path`` column, or fewer than
            :data:`MIN_NEGATIVES` images.
    """
    path = Path(path)
    if path.is_dir():
        paths = sorted(str(p) for p in path.rglob("*") if is_image_file(p))
    else:
        try:
            listed = pd.read_csv(path)
        except (OSError, UnicodeDecodeError, pd.errors.ParserError) as exc:
            raise EvaluationError(f"cannot read the negatives list {path}: {exc}") from None
        if "path" not in listed.columns:
            raise EvaluationError(f"{path} needs a 'path' column listing the negative images")
        paths = [str(p if Path(p).is_absolute() else path.parent / p)
                 for p in listed["path"].astype(str)]
    if len(paths) < MIN_NEGATIVES:
        raise EvaluationError(f"{len(paths)} negative images in {path}: the contrast score needs "
                              f"at least {MIN_NEGATIVES}")
    return pd.DataFrame({"path": paths})


def _sample(table: pd.DataFrame, limit: int, seed: int) -> pd.DataFrame:
    """At most ``limit`` random rows, as many from each source as it has, up to an equal share."""
    if len(table) <= limit:
        return table
    shuffled = table.sample(frac=1.0, random_state=seed)
    if "source" not in shuffled.columns:
        return shuffled.head(limit)
    turn = shuffled.groupby("source", dropna=False).cumcount()
    return shuffled.iloc[np.argsort(turn.to_numpy(), kind="stable")[:limit]]


def _features(model: Predictor, table: pd.DataFrame, show_progress: bool) -> np.ndarray:
    outputs = model.score_files(table["path"].astype(str).tolist(), features=True,
                                show_progress=show_progress)
    features = outputs.features
    if features is None:
        raise ValueError("no readable image to fit the gate on")
    return features[~np.isnan(features).any(axis=1)]
