"""The one preprocessing recipe: decoded RGB image → model input array.

Training-validation, evaluation, prediction (torch and onnxruntime), export and serving all
call :class:`Preprocessing`, parameterised only by what the model bundle records. Training
augmentation works on the output of :meth:`Preprocessing.resize` and then calls
:meth:`Preprocessing.normalise`, so it wraps this recipe rather than re-implementing it.
"""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from PIL import Image

__all__ = ["COLOUR_CONSTANCY", "RESIZE_POLICY", "Preprocessing", "shades_of_gray"]

# Shorter side scaled to the input size (bicubic, antialiased), then the centre square cropped:
# no aspect distortion, and dermoscopy images are centred on the lesion.
RESIZE_POLICY = "shorter_side_then_centre_crop"

DRAFT_FACTOR = 3
"""A JPEG is decoded at reduced scale only while its shorter side stays this many times the
input size: at 2x, resized pixels moved by about 1 grey level on average, at 3x by under 0.1."""

COLOUR_CONSTANCY: tuple[str, ...] = ("none", "shades_of_gray")
"""Colour normalisations :meth:`Preprocessing.normalise` can apply before standardising."""

SHADES_OF_GRAY_POWER = 6
"""Minkowski norm of the illuminant estimate (Finlayson & Trezzi 2004; p=6 as in the ISIC 2018
challenge entries of Barata et al.)."""


def shades_of_gray(pixels: np.ndarray, power: int = SHADES_OF_GRAY_POWER) -> np.ndarray:
    """Shades-of-gray colour constancy of ``(..., H, W, 3)`` pixels in ``0..255``, as float32.

    Each image's illuminant is estimated as the per-channel ``power``-mean of its pixels and
    divided out, keeping the overall brightness about the same: an image whose channels were
    multiplied by different gains (another camera, another light) comes out with the same
    colours, up to a common brightness factor and clipping.
    """
    array = np.asarray(pixels, dtype=np.float32)
    scaled = array / np.float32(255.0)  # keeps scaled**power far from float32 overflow
    illuminant = np.power(np.mean(np.power(scaled, power), axis=(-3, -2)), 1.0 / power)
    norm = np.linalg.norm(illuminant, axis=-1, keepdims=True)
    gains = norm / (np.sqrt(np.float32(3.0)) * np.maximum(illuminant, np.float32(1e-6)))
    return np.clip(array * gains[..., None, None, :], 0.0, 255.0).astype(np.float32)


@dataclass(frozen=True)
class Preprocessing:
    """How an RGB image becomes the model's input.

    Args:
        image_size: side of the square input, in pixels.
        mean: per-channel mean subtracted from pixels scaled to ``[0, 1]``.
        std: per-channel standard deviation dividing them.
        input_range: ``"unit"`` for normalised inputs, ``"0_255"`` for models that take raw
            pixel values and rescale them themselves (``mean`` and ``std`` are then unused).
        resize_policy: recorded for the bundle; only :data:`RESIZE_POLICY` exists.
        colour_constancy: ``"none"`` or ``"shades_of_gray"`` (see :func:`shades_of_gray`),
            applied to the resized (and, in training, augmented) pixels before standardising;
            it evens out colour casts between cameras and archives.
    """

    image_size: int
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    input_range: str = "unit"
    resize_policy: str = RESIZE_POLICY
    colour_constancy: str = "none"

    def __post_init__(self) -> None:
        if self.image_size < 8:
            raise ValueError(f"image_size must be at least 8 pixels, got {self.image_size}")
        if self.input_range not in ("unit", "0_255"):
            raise ValueError(f"input_range must be 'unit' or '0_255', got {self.input_range!r}")
        if self.resize_policy != RESIZE_POLICY:
            raise ValueError(f"unknown resize policy {self.resize_policy!r}")
        if self.colour_constancy not in COLOUR_CONSTANCY:
            raise ValueError(
                f"colour_constancy must be one of {COLOUR_CONSTANCY}, "
                f"got {self.colour_constancy!r}"
            )

    @classmethod
    def for_model(
        cls, model_name: str, image_size: int | None = None, colour_constancy: str = "none"
    ) -> Preprocessing:
        """The recipe a registered model expects, at its default size unless given."""
        from melanoscan.models.factory import get_model_spec  # imports torch: only when needed

        spec = get_model_spec(model_name)
        return cls(
            image_size=image_size or spec.input_size,
            mean=spec.mean,
            std=spec.std,
            input_range="0_255" if spec.expects_0_255 else "unit",
            colour_constancy=colour_constancy,
        )

    @property
    def decode_min_side(self) -> int:
        """Shortest side a JPEG may be decoded down to before :meth:`resize` (``decode``'s
        ``min_side``). Three times the input size keeps the resized pixels within about 0.1
        grey level of a full decode on average (tests/data/test_images.py states the bound)."""
        return DRAFT_FACTOR * self.image_size

    def resize(self, image: Image.Image) -> np.ndarray:
        """Square ``uint8`` array ``(image_size, image_size, 3)`` from an RGB image."""
        if image.mode != "RGB":
            image = image.convert("RGB")
        width, height = image.size
        scale = self.image_size / min(width, height)
        new_size = (max(self.image_size, round(width * scale)),
                    max(self.image_size, round(height * scale)))
        if new_size != image.size:
            image = image.resize(new_size, Image.Resampling.BICUBIC)
        left = (new_size[0] - self.image_size) // 2
        top = (new_size[1] - self.image_size) // 2
        image = image.crop((left, top, left + self.image_size, top + self.image_size))
        return np.asarray(image, dtype=np.uint8)

    def normalise(self, pixels: np.ndarray) -> np.ndarray:
        """``float32`` channels-first input from ``uint8`` ``(H, W, 3)`` or ``(N, H, W, 3)``."""
        if self.colour_constancy == "shades_of_gray":
            pixels = shades_of_gray(pixels)
        if pixels.dtype == np.uint8:
            # A lookup of the 256 values the formula below gives, per channel: the same float32
            # numbers, about 3x faster than the arithmetic on whole batches.
            out = np.empty((*pixels.shape[:-3], 3, *pixels.shape[-3:-1]), dtype=np.float32)
            for channel in range(3):
                np.take(self._lookup[channel], pixels[..., channel], out=out[..., channel, :, :])
            return out
        return self._standardise(np.moveaxis(np.asarray(pixels, dtype=np.float32), -1, -3))

    @functools.cached_property
    def _lookup(self) -> np.ndarray:
        """What :meth:`normalise` makes of each ``uint8`` value, per channel ``(3, 256)``."""
        values = np.broadcast_to(np.arange(256, dtype=np.float32), (3, 256))
        return np.ascontiguousarray(self._standardise(values[:, :, None])[:, :, 0])

    def _standardise(self, array: np.ndarray) -> np.ndarray:
        """Channels-first float32 values in ``0..255`` ``(..., 3, H, W)`` to the model's range."""
        if self.input_range == "0_255":
            return np.ascontiguousarray(array, dtype=np.float32)
        shape = (3, 1, 1)
        mean = np.asarray(self.mean, dtype=np.float32).reshape(shape)
        std = np.asarray(self.std, dtype=np.float32).reshape(shape)
        return np.ascontiguousarray((array / np.float32(255.0) - mean) / std)

    def __call__(self, image: Image.Image) -> np.ndarray:
        """Model input ``(3, image_size, image_size)`` for one RGB image."""
        return self.normalise(self.resize(image))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Preprocessing:
        known = {k: v for k, v in values.items() if k in cls.__dataclass_fields__}
        for key in ("mean", "std"):
            if key in known:
                known[key] = tuple(float(v) for v in known[key])
        return cls(**known)
