"""Cheap image statistics that say whether a picture is good enough to be read at all.

They are measured on what the model sees, the output of :meth:`Preprocessing.resize` (the
centre square at the model's input size), plus the decoded image's own size: blur that does not
survive the resize does not matter to the model, and blur that does is measured at the scale the
model works at.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import cv2
import numpy as np

__all__ = ["ImageQuality", "QualityLimits", "measure_quality"]

_GREY_ROW = np.array([[0.299, 0.587, 0.114]], dtype=np.float32)
_LAPLACIAN = np.array([[0, 1, 0], [1, -4, 1], [0, 1, 0]], dtype=np.float32)
# Added to the grey variance before dividing the Laplacian's by it, so that a nearly flat image
# (whose detail is all sensor noise) does not count as sharp.
_CONTRAST_FLOOR = 25.0


@dataclass(frozen=True)
class ImageQuality:
    """Statistics of one image.

    Args:
        width: decoded width, in pixels.
        height: decoded height, in pixels.
        brightness: mean grey level (0-255) of the model's input.
        contrast: standard deviation of the grey levels.
        sharpness: variance of the grey Laplacian over the grey variance (plus a floor): fine
            detail relative to the image's own contrast, so that a soft but well-exposed lesion
            is not "blurred" and a sharp low-contrast one is not either.
        detail: variance of the grey Laplacian itself (grey levels squared): what is left of
            fine detail, whatever the contrast; compression noise keeps it above 0.
        highlights: fraction of pixels with a grey level above 240 (blown-out highlights).
        colourfulness: mean HSV saturation (0-1); about 0 for a greyscale image.
    """

    width: int
    height: int
    brightness: float
    contrast: float
    sharpness: float
    detail: float
    highlights: float
    colourfulness: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def measure_quality(pixels: np.ndarray, size: tuple[int, int]) -> ImageQuality:
    """Statistics of a resized ``uint8`` ``(S, S, 3)`` model input whose source was ``size``.

    Args:
        pixels: the output of :meth:`Preprocessing.resize` (before any colour normalisation).
        size: ``(width, height)`` of the decoded image.
    """
    # OpenCV rather than numpy: the same float32 formulas, about 3x faster at 224 px, which
    # keeps the gate's share of prediction time small (docs/GATE.md, "cost").
    pixels = np.ascontiguousarray(pixels, dtype=np.uint8)
    grey = cv2.transform(pixels.astype(np.float32), _GREY_ROW)
    laplacian = cv2.filter2D(grey, cv2.CV_32F, _LAPLACIAN)[1:-1, 1:-1]
    mean, std = (float(v[0, 0]) for v in cv2.meanStdDev(grey))
    detail = float(cv2.meanStdDev(laplacian)[1][0, 0]) ** 2
    variance = std**2
    red, green, blue = cv2.split(pixels)
    brightest = cv2.max(cv2.max(red, green), blue)
    darkest = cv2.min(cv2.min(red, green), blue)
    saturation = cv2.divide(cv2.subtract(brightest, darkest).astype(np.float32),
                            np.maximum(brightest, 1).astype(np.float32))
    return ImageQuality(
        width=int(size[0]),
        height=int(size[1]),
        brightness=mean,
        contrast=std,
        sharpness=detail / (variance + _CONTRAST_FLOOR),
        detail=detail,
        highlights=float(np.count_nonzero(grey > 240.0)) / grey.size,
        colourfulness=float(cv2.mean(saturation)[0]),
    )


@dataclass(frozen=True)
class QualityLimits:
    """Where an image becomes too poor to read; defaults measured on dermoscopy (docs/GATE.md).

    On 4,617 dermoscopy images (the shipped model's training and validation images, ISIC 2018
    test, isic9/Test) the lowest contrast was 5.3, the lowest brightness 75, the highest 230, the
    largest highlight fraction 0.56, the lowest detail 8.4 and the 0.1% quantile of sharpness
    0.011.

    Args:
        min_side: shorter side of the decoded image below which it is too small.
        min_contrast: grey standard deviation below which the image is blank or near uniform.
        min_sharpness: :attr:`ImageQuality.sharpness` below which it is badly blurred.
        min_detail: :attr:`ImageQuality.detail` below which it is badly blurred (catches blurred
            low-contrast images, whose compression noise keeps the relative sharpness up).
        min_brightness: mean grey level below which it is under-exposed.
        max_brightness: mean grey level above which it is over-exposed.
        max_highlights: fraction of blown-out pixels above which it is over-exposed.
    """

    min_side: int = 80
    min_contrast: float = 5.0
    min_sharpness: float = 0.008
    min_detail: float = 4.0
    min_brightness: float = 65.0
    max_brightness: float = 235.0
    max_highlights: float = 0.6

    def problem(self, quality: ImageQuality) -> str | None:
        """Why ``quality`` is too poor to read (the first problem found), or ``None``."""
        side = min(quality.width, quality.height)
        if side < self.min_side:
            return (f"too small: {quality.width}x{quality.height} pixels (the shorter side must "
                    f"be at least {self.min_side})")
        if quality.brightness < self.min_brightness:
            return f"under-exposed (mean brightness {quality.brightness:.0f} of 255)"
        if quality.brightness > self.max_brightness or quality.highlights > self.max_highlights:
            return (f"over-exposed (mean brightness {quality.brightness:.0f} of 255, "
                    f"{quality.highlights:.0%} blown out)")
        if quality.contrast < self.min_contrast:
            return f"blank or nearly uniform (contrast {quality.contrast:.1f})"
        if quality.sharpness < self.min_sharpness or quality.detail < self.min_detail:
            return (f"badly blurred (sharpness {quality.sharpness:.4f}, detail "
                    f"{quality.detail:.1f})")
        return None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> QualityLimits:
        return cls(**{k: v for k, v in values.items() if k in cls.__dataclass_fields__})
