"""The torch dataset over a manifest table, and the class-balancing weights.

An image goes ``loader.load`` (decode + resize, cached) -> ``transform`` (training only) ->
``preprocessing.normalise``. An unreadable file yields a zero image flagged ``ok=False``
instead of an exception, so one bad file never ends an epoch; the training step drops it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from melanoscan.data.cache import ResizedImageLoader
from melanoscan.data.images import ImageDecodeError
from melanoscan.preprocess import Preprocessing
from melanoscan.taxonomy import CLASSES

__all__ = ["LesionDataset", "balanced_sample_weights", "inverse_frequency_weights"]

Item = tuple[torch.Tensor, int, int, bool]


class LesionDataset(Dataset[Item]):
    """Images of a manifest table as ``(image, label, index, ok)`` items.

    ``image`` is ``float32`` ``(3, S, S)``, ``label`` the class index, ``index`` the row's
    position in ``table`` and ``ok`` False when the file could not be read (image all zeros).

    Args:
        table: rows with ``path`` and ``label`` (a name in ``classes``), optionally
            ``content_hash`` (enables the disk cache).
        loader: decodes and resizes, with caching.
        preprocessing: normalises the resized (and augmented) pixels.
        transform: ``uint8`` ``(S, S, 3)`` -> same, e.g.
            ``functools.partial(augment, build_train_transform(...))``; ``None`` for evaluation.
        classes: class names in model output order.
    """

    def __init__(
        self,
        table: pd.DataFrame,
        loader: ResizedImageLoader,
        preprocessing: Preprocessing,
        transform: Callable[[np.ndarray], np.ndarray] | None = None,
        classes: Sequence[str] = CLASSES,
    ) -> None:
        self.classes = tuple(classes)
        index = {name: i for i, name in enumerate(self.classes)}
        names = table["label"].tolist()
        unknown = sorted({str(name) for name in names if name not in index})
        if unknown:
            raise ValueError(f"unknown label(s) {unknown}; known: {', '.join(self.classes)}")
        self.labels = np.asarray([index[name] for name in names], dtype=np.int64)
        # Fixed-width string arrays rather than lists of str: forked DataLoader workers would
        # otherwise copy every page that a Python object's reference count touches.
        self.paths = np.asarray(table["path"].astype(str).tolist(), dtype=str)
        hashes = table["content_hash"] if "content_hash" in table.columns else [None] * len(table)
        self.content_hashes = np.asarray(
            [h if isinstance(h, str) else "" for h in hashes], dtype=str
        )
        self.loader = loader
        self.preprocessing = preprocessing
        self.transform = transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> Item:
        path = str(self.paths[index])
        label = int(self.labels[index])
        try:
            pixels = self.loader.load(path, str(self.content_hashes[index]) or None)
        except ImageDecodeError:
            # Not warned here: loader workers would repeat it every epoch. Training reports
            # each flagged image once (melanoscan.training.callbacks.UnreadableImages).
            size = self.preprocessing.image_size
            return torch.zeros((3, size, size), dtype=torch.float32), label, index, False
        if self.transform is not None:
            pixels = self.transform(pixels)
        image = torch.from_numpy(self.preprocessing.normalise(pixels))
        return image, label, index, True


def balanced_sample_weights(labels: np.ndarray, power: float = 1.0) -> np.ndarray:
    """Per-sample weights ``count(class) ** -power`` for a weighted sampler.

    A class is then drawn in proportion to ``count ** (1 - power)``: ``1`` draws classes
    equally, ``0.5`` in proportion to the square root of their size, ``0`` as they come.
    """
    labels = np.asarray(labels, dtype=np.int64)
    if labels.size == 0:
        return np.zeros(0, dtype=np.float64)
    counts = np.bincount(labels)
    return counts[labels].astype(np.float64) ** -power


def inverse_frequency_weights(
    labels: np.ndarray, num_classes: int, max_weight: float | None = None
) -> torch.Tensor:
    """Class weights ``n / (k * n_c)`` over the ``k`` classes present; 0 for absent classes.

    Present classes then contribute equally to a weighted loss, and the weights average 1 over
    the samples. ``max_weight`` caps a class's weight: without it, a class of 2 images among
    5,700 weighs 317 (the run that had it, with label smoothing also weighted per class, reached
    validation accuracy 0.006 after one epoch).
    """
    labels = np.asarray(labels, dtype=np.int64)
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        found = f"{labels.min()}..{labels.max()}"
        raise ValueError(f"labels must lie in [0, {num_classes}), got {found}")
    counts = np.bincount(labels, minlength=num_classes).astype(np.float64)
    present = counts > 0
    weights = np.zeros(num_classes, dtype=np.float64)
    weights[present] = labels.size / (present.sum() * counts[present])
    if max_weight is not None:
        weights = np.minimum(weights, max_weight)
    return torch.tensor(weights, dtype=torch.float32)
