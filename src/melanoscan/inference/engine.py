"""The one batched inference loop, shared by predict, serve, evaluate, calibrate and the gate.

A *runner* (onnxruntime or torch, see :mod:`melanoscan.inference.predictor`) turns preprocessed
inputs into logits and the gate's features. :func:`forward` adds test-time augmentation on top
of any runner; :func:`decoded_batches` reads files in batches, reporting those it cannot read.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from melanoscan.data.images import ImageDecodeError, decode
from melanoscan.gate import GateVerdict
from melanoscan.preprocess import Preprocessing

__all__ = [
    "BatchOutputs",
    "ModelOutputs",
    "Runner",
    "decoded_batches",
    "dihedral_views",
    "forward",
]

Runner = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray | None]]
"""Preprocessed inputs ``(N, 3, S, S)`` → logits and the gate's features (``None``: none)."""


@dataclass
class BatchOutputs:
    """One forward pass over a batch.

    Args:
        logits: of the images as they are ``(N, classes)``.
        tta_logits: mean over the 8 dihedral views, or ``None`` without TTA.
        features: the gate's features of the images as they are, or ``None``.
    """

    logits: np.ndarray
    tta_logits: np.ndarray | None
    features: np.ndarray | None


@dataclass
class ModelOutputs:
    """What one pass over a list of image files gives.

    Args:
        classes: the model's classes, in the column order of the logits.
        logits: ``{"plain": (N, classes), "tta": ...}``; NaN rows for unreadable images.
        unreadable: ``{"path", "reason"}`` of the images that could not be read.
        backend: ``onnx`` or ``torch``: what computed them.
        features: the gate features of the plain view ``(N, D)`` (NaN rows for unreadable
            images); ``None`` unless asked for.
        verdicts: the gate's verdict per row (``None`` for unreadable rows); empty without a
            gate.
    """

    classes: list[str]
    logits: dict[str, np.ndarray]
    unreadable: list[dict[str, str]]
    backend: str
    features: np.ndarray | None = None
    verdicts: list[GateVerdict | None] = field(default_factory=list)


def dihedral_views(pixels: np.ndarray) -> list[np.ndarray]:
    """The 8 flips and 90-degree rotations of ``(..., H, W, C)`` images; the first is as is."""
    views = []
    for flipped in (pixels, pixels[..., ::-1, :]):
        views.extend(np.rot90(flipped, k, axes=(-3, -2)) for k in range(4))
    return views


def forward(
    run: Runner, preprocessing: Preprocessing, pixels: np.ndarray, tta: bool = False
) -> BatchOutputs:
    """Logits (and TTA logits) of resized ``uint8`` images ``(N, S, S, 3)``.

    The gate's features always come from the images as they are, with or without TTA.
    """
    def inputs(view: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(preprocessing.normalise(view), dtype=np.float32)

    logits, features = run(inputs(pixels))
    averaged = None
    if tta:
        views = [logits] + [run(inputs(view))[0] for view in dihedral_views(pixels)[1:]]
        averaged = np.mean(views, axis=0).astype(np.float32)
    return BatchOutputs(logits, averaged, features)


@dataclass
class DecodedBatch:
    """Up to a batch of files: the decoded images, their full sizes, their rows in the list,
    and the misses."""

    rows: list[int]
    images: list[Image.Image]
    sizes: list[tuple[int, int]]
    unreadable: list[tuple[int, str]]


def decoded_batches(
    paths: Sequence[Path | str], batch_size: int, min_side: int | None = None
) -> Iterator[DecodedBatch]:
    """Decode ``paths`` in order, ``batch_size`` files at a time (misses included in the count).

    Every file goes through :func:`melanoscan.data.images.decode` (EXIF rotation, alpha on
    black), as images given in memory do; ``min_side`` as there (large JPEGs decoded at
    reduced scale).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    for start in range(0, len(paths), batch_size):
        batch = DecodedBatch([], [], [], [])
        for row in range(start, min(len(paths), start + batch_size)):
            try:
                decoded = decode(paths[row], min_side=min_side)
            except ImageDecodeError as exc:
                batch.unreadable.append((row, exc.reason))
                continue
            batch.images.append(decoded.image)
            batch.sizes.append(decoded.original_size)
            batch.rows.append(row)
        yield batch
