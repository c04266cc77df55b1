"""Batched logits for a table of images, with optional test-time augmentation."""

from __future__ import annotations

import numpy as np
import pandas as pd

from melanoscan.bundle import Bundle
from melanoscan.data.cache import ResizedImageLoader
from melanoscan.data.images import ImageDecodeError
from melanoscan.progress import progress_bar

__all__ = ["dihedral_views", "predict_logits"]


def dihedral_views(pixels: np.ndarray) -> list[np.ndarray]:
    """The 8 flips and 90-degree rotations of ``(..., H, W, C)`` images; the first is as is."""
    views = []
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
    loader = ResizedImageLoader(bundle.preprocessing, mode="none")
    n, k = len(table), len(bundle.classes)
    plain = np.full((n, k), np.nan, dtype=np.float32)
    averaged = np.full((n, k), np.nan, dtype=np.float32) if tta else None
    unreadable: list[dict[str, str]] = []
    paths = table["path"].astype(str).tolist()
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
                outputs = [bundle.logits(bundle.preprocessing.normalise(v)) for v in views]
                plain[rows] = outputs[0]
                if averaged is not None:
                    averaged[rows] = np.mean(outputs, axis=0)
            advance(min(batch_size, n - start))
    logits = {"plain": plain}
    if averaged is not None:
        logits["tta"] = averaged
    return logits, unreadable
