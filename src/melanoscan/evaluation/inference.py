"""Batched logits (and the gate's inputs) for a table of images, with optional TTA."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from melanoscan.bundle import Bundle
from melanoscan.data.cache import ResizedImageLoader
from melanoscan.data.images import ImageDecodeError
from melanoscan.gate import Gate, GateVerdict
from melanoscan.progress import progress_bar

__all__ = ["ModelOutputs", "dihedral_views", "predict_logits", "predict_outputs"]


@dataclass
class ModelOutputs:
    """What one pass over a table of images gives.

    Args:
        logits: ``{"plain": (N, classes), "tta": ...}``; NaN rows for unreadable images.
        unreadable: ``{"path", "reason"}`` of the images that could not be read.
        features: the gate features of the plain view ``(N, D)`` (NaN rows for unreadable
            images); ``None`` unless asked for.
        verdicts: the gate's verdict per row (``None`` for unreadable rows); empty unless a gate
            was given.
    """

    logits: dict[str, np.ndarray]
    unreadable: list[dict[str, str]]
    features: np.ndarray | None = None
    verdicts: list[GateVerdict | None] = field(default_factory=list)


def dihedral_views(pixels: np.ndarray) -> list[np.ndarray]:
    """The 8 flips and 90-degree rotations of ``(..., H, W, C)`` images; the first is as is."""
    views: list[np.ndarray] = []
    for flipped in (pixels, pixels[..., ::-1, :]):
        views.extend(np.rot90(flipped, k, axes=(-3, -2)) for k in range(4))
    return views


def predict_logits(
    bundle: Bundle,
    table: pd.DataFrame,
    *,
    tta: bool = False,
    batch_size: int = 32,
    show_progress: bool = True,
) -> tuple[dict[str, np.ndarray], list[dict[str, str]]]:
    """Logits for every row of ``table`` (``path``, optional ``content_hash``).

    Returns ``({"plain": logits, "tta": mean logits over the 8 dihedral views}, unreadable)``;
    rows that could not be read get NaN logits and an entry ``{"path", "reason"}``.
    """
    outputs = predict_outputs(bundle, table, tta=tta, batch_size=batch_size,
                              show_progress=show_progress)
    return outputs.logits, outputs.unreadable


def predict_outputs(
    bundle: Bundle,
    table: pd.DataFrame,
    *,
    tta: bool = False,
    features: bool = False,
    gate: Gate | None = None,
    batch_size: int = 32,
    show_progress: bool = True,
) -> ModelOutputs:
    """Logits for every row of ``table``, and optionally the gate's features and verdicts.

    Args:
        bundle: the model.
        table: ``path``, optional ``content_hash``, optional ``width`` and ``height`` of the
            decoded image (what :func:`melanoscan.data.manifest.scan` adds; without them the
            gate's size check sees the resized image).
        tta: also the mean logits over the 8 dihedral views.
        features: keep the gate features of every image.
        gate: assess every image with this gate.
        batch_size: images per forward pass.
        show_progress: a progress bar.
    """
    loader = ResizedImageLoader(bundle.preprocessing, mode="none")
    n, k = len(table), len(bundle.classes)
    plain = np.full((n, k), np.nan, dtype=np.float32)
    averaged = np.full((n, k), np.nan, dtype=np.float32) if tta else None
    kept: np.ndarray | None = None
    verdicts: list[GateVerdict | None] = [None] * n if gate is not None else []
    unreadable: list[dict[str, str]] = []
    paths = table["path"].astype(str).tolist()
    sizes = _sizes(table, bundle.preprocessing.image_size)
    with_features = features or gate is not None
    with progress_bar("Predicting", n, enabled=show_progress) as advance:
        for start in range(0, n, batch_size):
            rows, batch = [], []
            for row in range(start, min(n, start + batch_size)):
                try:
                    batch.append(loader.load(paths[row]))
                    rows.append(row)
                except ImageDecodeError as exc:
                    unreadable.append({"path": paths[row], "reason": exc.reason})
            if batch:
                pixels = np.stack(batch)
                views = dihedral_views(pixels) if tta else [pixels]
                outputs = [bundle.logits(bundle.preprocessing.normalise(v)) for v in views[1:]]
                if with_features:
                    first, gate_features = bundle.logits_and_features(
                        bundle.preprocessing.normalise(pixels))
                    if kept is None:
                        kept = np.full((n, gate_features.shape[1]), np.nan, dtype=np.float32)
                    kept[rows] = gate_features
                    if gate is not None:
                        found = gate.assess(pixels, [sizes[r] for r in rows], gate_features)
                        for row, verdict in zip(rows, found, strict=True):
                            verdicts[row] = verdict
                else:
                    first = bundle.logits(bundle.preprocessing.normalise(pixels))
                outputs.insert(0, first)
                plain[rows] = outputs[0]
                if averaged is not None:
                    averaged[rows] = np.mean(outputs, axis=0)
            advance(min(batch_size, n - start))
    logits = {"plain": plain}
    if averaged is not None:
        logits["tta"] = averaged
    return ModelOutputs(logits, unreadable, kept if with_features else None, verdicts)


def _sizes(table: pd.DataFrame, fallback: int) -> list[tuple[int, int]]:
    if {"width", "height"} <= set(table.columns):
        widths = pd.to_numeric(table["width"], errors="coerce").fillna(fallback).astype(int)
        heights = pd.to_numeric(table["height"], errors="coerce").fillna(fallback).astype(int)
        return list(zip(widths, heights, strict=True))
    return [(fallback, fallback)] * len(table)
