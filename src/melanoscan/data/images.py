"""Safe image decoding: every supported file becomes an 8-bit RGB image, or a reasoned error.

All paths that read pixels (audit, training, evaluation, prediction, serving) go through
:func:`decode` (or :func:`load_rgb`), so a file is either usable everywhere or rejected
everywhere with the same reason, and gives the same pixels whether it is passed as a path, as
bytes, as a PIL image or as an array.
"""

from __future__ import annotations

import hashlib
import io
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

IMAGE_SUFFIXES: frozenset[str] = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff"})
SUPPORTED_FORMATS: frozenset[str] = frozenset({"JPEG", "PNG", "BMP", "TIFF", "MPO"})

ORIENTATION_TAG = 0x0112
"""EXIF orientation; values 5 to 8 swap width and height."""

MAX_PIXELS = 64_000_000
"""Images above this many pixels are refused as likely decompression bombs (8000x8000)."""


class ImageDecodeError(Exception):
    """An image that cannot be used, with a short human-readable reason."""

    def __init__(self, path: str | Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason


@dataclass(frozen=True)
class DecodedImage:
    """An image normalised to RGB, with what was known about the file before normalising.

    Args:
        image: the 8-bit RGB image, EXIF orientation applied.
        source_mode: the PIL mode of the file (e.g. ``"L"``, ``"RGBA"``, ``"CMYK"``, ``"I;16"``).
        source_format: the container format PIL detected (e.g. ``"JPEG"``; ``"memory"`` for an
            image made in memory).
        original_size: the image's full size, EXIF orientation applied; larger than
            ``image.size`` when a JPEG was decoded at a reduced scale (``min_side``).
    """

    image: Image.Image
    source_mode: str
    source_format: str
    original_size: tuple[int, int]

    @property
    def size(self) -> tuple[int, int]:
        return self.image.size


def is_image_file(path: Path) -> bool:
    """True if the file name has one of the supported image suffixes (case-insensitive)."""
    return path.suffix.lower() in IMAGE_SUFFIXES


ImageSource = bytes | Path | str | Image.Image | np.ndarray
"""What :func:`decode` reads: a file path, the file's bytes, a PIL image or a pixel array."""


def decode(
    data: ImageSource, *, name: str | None = None, min_side: int | None = None
) -> DecodedImage:
    """Decode a file, its bytes, a PIL image or an array into an 8-bit RGB image.

    Greyscale, palette, RGBA (composited on black), CMYK and 16-bit images are converted;
    EXIF rotation is applied, also to a PIL image opened from a file. Arrays are ``uint8``
    ``(H, W)`` grey, ``(H, W, 3)`` RGB or ``(H, W, 4)`` RGBA, or ``uint16`` ``(H, W)``.

    ``min_side`` lets a JPEG be decoded at 1/2, 1/4 or 1/8 scale (libjpeg's DCT scaling: a
    12-megapixel photo then costs a fraction of a full decode) as long as its shorter side stays
    at least ``min_side``; other inputs are decoded whole. ``original_size`` keeps the full size.

    Raises:
        ImageDecodeError: empty, truncated, unknown, unsupported or oversized input.
        ValueError: an array of another shape or type.
    """
    label = name or _label(data)
    if isinstance(data, np.ndarray):
        data = _from_array(data)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            if isinstance(data, Image.Image):
                return _normalise(data, label, from_file=False)
            with Image.open(_stream(data, label)) as opened:
                return _normalise(opened, label, from_file=True, min_side=min_side)
    except ImageDecodeError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageDecodeError(label, f"possible decompression bomb ({exc})") from None
    except UnidentifiedImageError:
        raise ImageDecodeError(label, "not an image (unrecognised content)") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        reason = str(exc) or type(exc).__name__
        if "truncated" in reason.lower():
            reason = f"truncated image ({reason})"
        raise ImageDecodeError(label, f"cannot decode: {reason}") from None
    except Exception as exc:  # a decoder bug on one odd file must not end a long run
        raise ImageDecodeError(label, f"cannot decode: {type(exc).__name__}: {exc}") from None


def load_rgb(path: str | Path) -> Image.Image:
    """Decode a file into an 8-bit RGB PIL image (see :func:`decode`)."""
    return decode(path).image


def _label(data: ImageSource) -> str:
    if isinstance(data, bytes):
        return "<bytes>"
    if isinstance(data, Image.Image):
        return "<image>"
    if isinstance(data, np.ndarray):
        return "<array>"
    return str(data)


def _stream(data: bytes | Path | str, label: str) -> io.BytesIO | Path:
    if isinstance(data, bytes):
        if not data:
            raise ImageDecodeError(label, "empty file (0 bytes)")
        return io.BytesIO(data)
    path = Path(data)
    try:
        if path.stat().st_size == 0:
            raise ImageDecodeError(label, "empty file (0 bytes)")
    except FileNotFoundError:
        raise ImageDecodeError(label, "file not found") from None
    except OSError as exc:  # a link loop, an unreadable folder on the way
        raise ImageDecodeError(label, f"cannot read: {exc.strerror or exc}") from None
    return path


def _from_array(array: np.ndarray) -> Image.Image:
    grey = array.ndim == 2 and array.dtype in (np.uint8, np.uint16)
    colour = array.ndim == 3 and array.shape[2] in (3, 4) and array.dtype == np.uint8
    if not (grey or colour):
        raise ValueError("arrays must be uint8 (H, W), (H, W, 3) RGB or (H, W, 4) RGBA, or "
                         f"uint16 (H, W); got {array.dtype} {array.shape}")
    return Image.fromarray(np.ascontiguousarray(array))


def _normalise(
    opened: Image.Image, label: str, *, from_file: bool, min_side: int | None = None
) -> DecodedImage:
    """The checks and conversions every input goes through, whatever its kind."""
    if from_file or opened.format is not None:  # images made in memory have no format
        source_format = opened.format or "unknown"
        if source_format not in SUPPORTED_FORMATS:
            raise ImageDecodeError(label, f"unsupported image format {source_format}")
    else:
        source_format = "memory"
    width, height = opened.size
    if width * height > MAX_PIXELS:
        raise ImageDecodeError(
            label,
            f"image too large ({width}x{height} = {width * height:,} pixels, "
            f"limit {MAX_PIXELS:,}): possible decompression bomb",
        )
    source_mode = opened.mode
    rotated = opened.getexif().get(ORIENTATION_TAG) in (5, 6, 7, 8)
    original_size = (height, width) if rotated else (width, height)
    if min_side and source_format in ("JPEG", "MPO"):
        opened.draft(opened.mode, (min_side, min_side))  # both sides stay >= min_side
    opened.load()
    image = _to_rgb(ImageOps.exif_transpose(opened))
    return DecodedImage(image=image, source_mode=source_mode, source_format=source_format,
                        original_size=original_size)


def _to_rgb(image: Image.Image) -> Image.Image:
    mode = image.mode
    if mode == "RGB":
        return image.copy()
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        return _high_bit_depth_to_rgb(image)
    if mode == "P":
        image = image.convert("RGBA")
        mode = "RGBA"
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def _high_bit_depth_to_rgb(image: Image.Image) -> Image.Image:
    """Scale a 16/32-bit or float single-channel image to 8 bits by its nominal range."""
    array = np.asarray(image, dtype=np.float64)
    if image.mode.startswith("I;16"):
        top = 65535.0
    elif image.mode == "F":
        top = max(float(array.max(initial=0.0)), 1.0) if array.max(initial=0.0) > 1.0 else 1.0
    else:
        top = 65535.0 if array.max(initial=0) <= 65535 else float(array.max())
    scaled = np.clip(np.rint(array / top * 255.0), 0, 255).astype(np.uint8)
    return Image.fromarray(scaled).convert("RGB")


def pixel_hash(image: Image.Image) -> str:
    """SHA-256 of the decoded RGB pixels and size: equal for re-encoded or renamed copies."""
    digest = hashlib.sha256()
    digest.update(f"{image.width}x{image.height}:".encode())
    digest.update(np.ascontiguousarray(np.asarray(image.convert("RGB"))).tobytes())
    return digest.hexdigest()
