"""Synthetic acquisition artefacts: what other clinics' cameras and habits add to an image.

Each function takes a ``uint8`` ``(H, W, 3)`` RGB array, a numpy random generator and a
``severity`` in ``[0, 1]`` (0 = the mildest form, 1 = the strongest), and returns a new array of
the same shape. Training augments with them (:class:`AcquisitionArtefact`, every class alike),
and ``benchmarks/artefacts.py`` measures how much each costs a model.

* ``frame``: the dark circular field of view of a contact dermatoscope (a vignette);
* ``hair``: dark hairs crossing the lesion;
* ``ruler``: ruler tick marks along an edge and a marker-ink ring or dots;
* ``colour_cast``: per-channel gains of another camera or light;
* ``blur``: defocus;
* ``jpeg``: re-compression at low quality;
* ``low_resolution``: an image taken or stored at a fraction of the resolution.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import cv2
import numpy as np

from melanoscan.data._albumentations import A

__all__ = ["ARTEFACTS", "AcquisitionArtefact", "apply_artefact"]

Artefact = Callable[[np.ndarray, np.random.Generator, float], np.ndarray]


def frame(image: np.ndarray, rng: np.random.Generator, severity: float) -> np.ndarray:
    """Black outside a (soft-edged, slightly off-centre) circle, as a dermatoscope leaves."""
    height, width = image.shape[:2]
    side = min(height, width)
    # severity 0: the circle just clips the corners; 1: it cuts well into the sides.
    radius = side * (0.72 - 0.27 * severity) * rng.uniform(0.95, 1.05)
    centre_x = width / 2 + rng.uniform(-0.05, 0.05) * side
    centre_y = height / 2 + rng.uniform(-0.05, 0.05) * side
    ys, xs = np.ogrid[:height, :width]
    distance = np.sqrt((xs - centre_x) ** 2 + (ys - centre_y) ** 2)
    edge = max(1.0, 0.03 * side)
    keep = np.clip((radius - distance) / edge, 0.0, 1.0)[..., None]
    floor = rng.uniform(0, 25)  # frames are rarely pure black
    return (image * keep + floor * (1 - keep)).astype(np.uint8)


def hair(image: np.ndarray, rng: np.random.Generator, severity: float) -> np.ndarray:
    """Thin dark curved strands across the image."""
    out = image.copy()
    height, width = image.shape[:2]
    side = min(height, width)
    count = round(2 + 18 * severity * rng.uniform(0.6, 1.0))
    thickness = max(1, round(side / 224 * rng.uniform(0.8, 1.8)))
    colour = tuple(int(c) for c in rng.uniform(10, 60) * np.array([1.0, 0.85, 0.7]))
    for _ in range(count):
        start = rng.uniform(0, 1, 2) * (width, height)
        angle = rng.uniform(0, np.pi)
        length = side * rng.uniform(0.3, 0.9)
        bend = rng.uniform(-0.4, 0.4)
        points = []
        for t in np.linspace(0, 1, 12):
            a = angle + bend * t
            points.append(start + length * t * np.array([np.cos(a), np.sin(a)]))
        curve = np.asarray(points, dtype=np.int32).reshape(-1, 1, 2)
        cv2.polylines(out, [curve], isClosed=False, color=colour, thickness=thickness,
                      lineType=cv2.LINE_AA)
    return out


def ruler(image: np.ndarray, rng: np.random.Generator, severity: float) -> np.ndarray:
    """Ruler ticks along one edge, and a marker-ink ring or dots around the lesion."""
    out = image.copy()
    height, width = image.shape[:2]
    side = min(height, width)
    scale = side / 224
    ink = tuple(int(c) for c in rng.choice([(60, 40, 120), (40, 40, 40), (30, 60, 140)]))
    # Ticks along a random edge.
    horizontal = bool(rng.integers(2))
    offset = int(rng.uniform(0.04, 0.15) * side)
    spacing = max(3, round(rng.uniform(5, 9) * scale))
    span = width if horizontal else height
    for k, position in enumerate(range(int(0.1 * span), int(0.9 * span), spacing)):
        tick = int((10 if k % 5 == 0 else 5) * scale * (0.6 + 0.6 * severity))
        if horizontal:
            cv2.line(out, (position, offset), (position, offset + tick), (20, 20, 20),
                     max(1, round(scale)))
        else:
            cv2.line(out, (offset, position), (offset + tick, position), (20, 20, 20),
                     max(1, round(scale)))
    # Ink: a partial ring or a few dots, stronger with severity.
    centre = (int(width * rng.uniform(0.35, 0.65)), int(height * rng.uniform(0.35, 0.65)))
    if rng.random() < 0.5:
        axes = (int(side * rng.uniform(0.3, 0.45)), int(side * rng.uniform(0.3, 0.45)))
        sweep = 90 + 270 * severity
        start = rng.uniform(0, 360)
        cv2.ellipse(out, centre, axes, rng.uniform(0, 180), start, start + sweep, ink,
                    max(1, round(2 * scale)), cv2.LINE_AA)
    else:
        for _ in range(int(1 + 4 * severity)):
            point = (int(rng.uniform(0.1, 0.9) * width), int(rng.uniform(0.1, 0.9) * height))
            cv2.circle(out, point, max(2, int(rng.uniform(3, 6) * scale)), ink, -1, cv2.LINE_AA)
    return out


def colour_cast(image: np.ndarray, rng: np.random.Generator, severity: float) -> np.ndarray:
    """Per-channel gains (white balance of another camera or lamp)."""
    strength = 0.05 + 0.2 * severity
    gains = 1.0 + rng.uniform(-strength, strength, 3)
    return np.clip(image.astype(np.float32) * gains, 0, 255).astype(np.uint8)


def blur(image: np.ndarray, rng: np.random.Generator, severity: float) -> np.ndarray:
    """Gaussian defocus; sigma in pixels of a 224 px image, scaled to the image."""
    sigma = (0.5 + 2.0 * severity) * rng.uniform(0.8, 1.2) * min(image.shape[:2]) / 224
    return cv2.GaussianBlur(image, (0, 0), sigmaX=sigma)


def jpeg(image: np.ndarray, rng: np.random.Generator, severity: float) -> np.ndarray:
    """JPEG re-compression at quality 70 (mild) down to 15 (strong)."""
    quality = round(70 - 55 * severity + rng.uniform(-5, 5))
    ok, encoded = cv2.imencode(".jpg", image[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])
    decoded = cv2.imdecode(encoded, cv2.IMREAD_COLOR) if ok else None
    if decoded is None:  # pragma: no cover - OpenCV always encodes and decodes uint8 RGB
        return image
    return np.ascontiguousarray(decoded[..., ::-1])


def low_resolution(image: np.ndarray, rng: np.random.Generator, severity: float) -> np.ndarray:
    """Down to 1/1.5 (mild) .. 1/4 (strong) of the side, and back up."""
    height, width = image.shape[:2]
    factor = (1.5 + 2.5 * severity) * rng.uniform(0.9, 1.1)
    small = (max(8, round(width / factor)), max(8, round(height / factor)))
    down = cv2.resize(image, small, interpolation=cv2.INTER_AREA)
    return cv2.resize(down, (width, height), interpolation=cv2.INTER_LINEAR)


ARTEFACTS: dict[str, Artefact] = {
    "frame": frame,
    "hair": hair,
    "ruler": ruler,
    "colour_cast": colour_cast,
    "blur": blur,
    "jpeg": jpeg,
    "low_resolution": low_resolution,
}
"""Every artefact by name, in the order of the benchmark table."""


def apply_artefact(
    name: str, image: np.ndarray, rng: np.random.Generator, severity: float = 0.5
) -> np.ndarray:
    """Apply the artefact ``name`` to an ``uint8`` ``(H, W, 3)`` image."""
    if name not in ARTEFACTS:
        raise ValueError(f"unknown artefact {name!r}; known: {', '.join(ARTEFACTS)}")
    if not 0.0 <= severity <= 1.0:
        raise ValueError(f"severity must be in [0, 1], got {severity}")
    return ARTEFACTS[name](np.ascontiguousarray(image, dtype=np.uint8), rng, severity)


class AcquisitionArtefact(A.ImageOnlyTransform):
    """An albumentations transform adding one synthetic artefact at a random severity.

    Args:
        name: a key of :data:`ARTEFACTS`.
        max_severity: severities are drawn uniformly from ``[0, max_severity]``.
        p: probability of applying it.
    """

    def __init__(self, name: str, max_severity: float = 1.0, p: float = 0.5) -> None:
        super().__init__(p=p)
        if name not in ARTEFACTS:
            raise ValueError(f"unknown artefact {name!r}; known: {', '.join(ARTEFACTS)}")
        self.name = name
        self.max_severity = max_severity

    def apply(self, img: np.ndarray, **params: Any) -> np.ndarray:
        severity = float(self.random_generator.uniform(0.0, self.max_severity))
        return ARTEFACTS[self.name](img, self.random_generator, severity)

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("name", "max_severity")
