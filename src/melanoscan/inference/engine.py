"""The one batched inference loop, shared by predict, serve, evaluate, calibrate and the gate.

A *runner* (onnxruntime or torch, see :mod:`melanoscan.inference.predictor`) turns preprocessed
inputs into logits and the gate's features. :func:`forward` adds test-time augmentation on top
of any runner; :func:`decoded_batches` reads files in batches, reporting those it cannot read.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from melanoscan.data.images import ImageDecodeError, ImageSource, decode
from melanoscan.gate import GateVerdict
from melanoscan.preprocess import Preprocessing

__all__ = [
    "BatchOutputs",
    "MicroBatcher",
    "ModelOutputs",
    "Runner",
    "decode_resized",
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
    views: list[np.ndarray] = []
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


def decode_resized(
    source: ImageSource, preprocessing: Preprocessing
) -> tuple[np.ndarray, tuple[int, int]]:
    """The model's resized ``uint8`` pixels of one input, and its full size (for the gate).

    Large JPEGs are decoded at reduced scale (``preprocessing.decode_min_side``).

    Raises:
        ImageDecodeError: the input cannot be read.
    """
    decoded = decode(source, min_side=preprocessing.decode_min_side)
    return preprocessing.resize(decoded.image), decoded.original_size


@dataclass
class DecodedBatch:
    """Up to a batch of files, decoded and resized: the pixels ``(n, S, S, 3)`` and full sizes of
    those that could be read, their rows in the list, and the misses."""

    rows: list[int]
    pixels: np.ndarray
    sizes: list[tuple[int, int]]
    unreadable: list[tuple[int, str]]


def decoded_batches(
    paths: Sequence[Path | str], batch_size: int, preprocessing: Preprocessing,
    prefetch: bool = True,
) -> Iterator[DecodedBatch]:
    """Decode and resize ``paths`` in order, ``batch_size`` files at a time (misses included).

    Every file goes through :func:`melanoscan.data.images.decode` (EXIF rotation, alpha on
    black; large JPEGs at reduced scale, ``preprocessing.decode_min_side``), as images given in
    memory do. With ``prefetch`` the next batch is decoded on a worker thread while the caller
    runs the network on this one (Pillow and onnxruntime release the GIL); at most two batches
    are held at a time, whatever the number of files.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    starts = list(range(0, len(paths), batch_size))

    def load(start: int) -> DecodedBatch:
        return _decode_batch(paths[start : start + batch_size], start, preprocessing)

    if not prefetch or len(starts) < 2:
        yield from map(load, starts)
        return
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="melanoscan-decode") as pool:
        pending = pool.submit(load, starts[0])
        for following in [*starts[1:], None]:
            batch = pending.result()
            if following is not None:
                pending = pool.submit(load, following)
            yield batch


def _decode_batch(
    paths: Sequence[Path | str], first_row: int, preprocessing: Preprocessing
) -> DecodedBatch:
    rows, pixels, sizes, unreadable = [], [], [], []
    for row, path in enumerate(paths, start=first_row):
        try:
            resized, size = decode_resized(path, preprocessing)
        except ImageDecodeError as exc:
            unreadable.append((row, exc.reason))
            continue
        rows.append(row)
        pixels.append(resized)
        sizes.append(size)
    side = preprocessing.image_size
    stacked = np.stack(pixels) if pixels else np.zeros((0, side, side, 3), dtype=np.uint8)
    return DecodedBatch(rows, stacked, sizes, unreadable)


class MicroBatcher:
    """A runner that merges calls made at the same time from several threads into one pass.

    The service answers each request on its own thread; on a CPU, one forward pass over eight
    images costs far less than eight passes over one. Calls queue up while a pass runs, and the
    next pass takes every queued input (up to ``max_batch`` images), so batches grow with the
    load and a lone request waits for nothing.

    Args:
        run: the runner to share.
        max_batch: most images in one pass.
    """

    def __init__(self, run: Runner, max_batch: int = 32) -> None:
        self._run = run
        self.max_batch = max_batch
        self._jobs: queue.SimpleQueue[tuple[np.ndarray, Future]] = queue.SimpleQueue()
        self._worker: threading.Thread | None = None
        self._start = threading.Lock()
        self.passes = 0

    def __call__(self, inputs: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        done: Future = Future()
        self._jobs.put((inputs, done))
        with self._start:
            if self._worker is None:
                self._worker = threading.Thread(target=self._serve, name="melanoscan-batcher",
                                                daemon=True)
                self._worker.start()
        return done.result()

    def _serve(self) -> None:
        while True:
            jobs = [self._jobs.get()]
            count = len(jobs[0][0])
            while count < self.max_batch:
                try:
                    job = self._jobs.get_nowait()
                except queue.Empty:
                    break
                jobs.append(job)
                count += len(job[0])
            self._pass(jobs)

    def _pass(self, jobs: list[tuple[np.ndarray, Future]]) -> None:
        try:
            logits, features = self._run(np.concatenate([inputs for inputs, _ in jobs]))
        except Exception as exc:  # every caller of this pass gets the error, the worker lives on
            for _, done in jobs:
                done.set_exception(exc)
            return
        self.passes += 1
        start = 0
        for inputs, done in jobs:
            end = start + len(inputs)
            done.set_result((logits[start:end], None if features is None else features[start:end]))
            start = end
