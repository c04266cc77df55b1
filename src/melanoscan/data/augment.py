"""Training augmentation: albumentations transforms on the output of ``Preprocessing.resize``.

The transforms take and return ``uint8`` ``(S, S, 3)`` arrays, so a training image goes
``resize -> augment -> normalise`` and validation images simply skip the middle step.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import cv2
import numpy as np
import torch.utils.data

from melanoscan.data._albumentations import A
from melanoscan.data.artefacts import AcquisitionArtefact

__all__ = ["AugmentationSettings", "augment", "build_train_transform"]


class AugmentationSettings(Protocol):
    """What :func:`build_train_transform` reads: ``training.config.AugmentationConfig`` (the
    data layer does not import the training layer above it). Probabilities are in [0, 1]."""

    crop_scale_min: float
    hflip: float
    vflip: float
    rotate90: float
    affine: float
    shift: float
    scale: float
    rotate: float
    artefact_probability: float
    artefact_max_severity: float
    colour_jitter: float
    brightness: float
    contrast: float
    saturation: float
    hue: float

    @property
    def artefacts(self) -> Sequence[str]:
        """Names of the acquisition artefacts to apply (read-only: any sequence will do)."""
        ...


class _WorkerSeededCompose(A.Compose):
    """A Compose that gives each DataLoader worker its own random stream.

    Workers receive copies of the dataset with the transform's random state inside, so without
    this every worker (and, with non-persistent workers, every epoch) would replay the same
    augmentation sequence. Torch hands each worker a distinct seed per epoch, derived from the
    torch seed, so mixing it with the Compose seed stays reproducible.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._base_seed: int | None = self.seed
        self._worker_seed: int | None = None

    def __call__(self, *args: Any, **data: Any) -> dict[str, Any]:
        info = torch.utils.data.get_worker_info()
        if info is not None and info.seed != self._worker_seed:
            self._worker_seed = info.seed
            entropy = [info.seed] if self._base_seed is None else [self._base_seed, info.seed]
            self.set_random_seed(int(np.random.SeedSequence(entropy).generate_state(1)[0]))
        return super().__call__(*args, **data)


def build_train_transform(
    config: AugmentationSettings, image_size: int, *, seed: int | None = None
) -> A.Compose:
    """The training augmentation for ``uint8`` ``(image_size, image_size, 3)`` arrays.

    Transforms whose probability is 0 are left out, and the random resized crop when
    ``crop_scale_min`` is 1, so an all-zero config is the identity. With ``seed`` the sequence
    of augmentations is reproducible (per DataLoader worker, given the torch seed).
    """
    transforms: list[A.BasicTransform] = []
    if config.crop_scale_min < 1.0:
        transforms.append(
            A.RandomResizedCrop(
                size=(image_size, image_size),
                scale=(config.crop_scale_min, 1.0),
                ratio=(3 / 4, 4 / 3),
                p=1.0,
            )
        )
    if config.hflip > 0:
        transforms.append(A.HorizontalFlip(p=config.hflip))
    if config.vflip > 0:
        transforms.append(A.VerticalFlip(p=config.vflip))
    if config.rotate90 > 0:
        transforms.append(A.RandomRotate90(p=config.rotate90))
    if config.affine > 0:
        transforms.append(
            A.Affine(
                translate_percent=(-config.shift, config.shift),
                scale=(1.0 - config.scale, 1.0 + config.scale),
                rotate=(-config.rotate, config.rotate),
                keep_ratio=True,
                border_mode=cv2.BORDER_REFLECT_101,
                p=config.affine,
            )
        )
    if config.artefact_probability > 0:
        # After the geometry (a dermatoscope frame stays round and centred), before colour.
        transforms += [
            AcquisitionArtefact(name, config.artefact_max_severity, p=config.artefact_probability)
            for name in config.artefacts
        ]
    if config.colour_jitter > 0:
        transforms.append(
            A.ColorJitter(
                brightness=_around_one(config.brightness),
                contrast=_around_one(config.contrast),
                saturation=_around_one(config.saturation),
                hue=(-config.hue, config.hue),
                p=config.colour_jitter,
            )
        )
    return _WorkerSeededCompose(transforms, seed=seed)


def augment(transform: A.Compose, pixels: np.ndarray) -> np.ndarray:
    """Apply an albumentations transform to one ``uint8`` ``(H, W, 3)`` array."""
    return transform(image=pixels)["image"]


def _around_one(strength: float) -> tuple[float, float]:
    return (max(0.0, 1.0 - strength), 1.0 + strength)
