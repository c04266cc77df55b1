"""Check an uploaded file and decode it, trusting its content, never its name or content type."""

from __future__ import annotations

import io
import warnings

from PIL import Image, UnidentifiedImageError

from melanoscan.data.images import SUPPORTED_FORMATS, ImageDecodeError, decode
from melanoscan.serving.errors import UploadError
from melanoscan.serving.limits import ServeLimits

__all__ = ["UploadError", "read_image"]


def read_image(
    data: bytes, filename: str, limits: ServeLimits, min_side: int | None = None
) -> Image.Image:
    """Return the upload as an 8-bit RGB image, or raise :class:`UploadError`.

    The format is sniffed from the bytes; the dimensions and aspect ratio are checked from the
    header before any pixel is decoded. ``min_side`` as in :func:`~melanoscan.data.images.decode`
    (a large JPEG is decoded at reduced scale, never below the model's needs).
    """
    if not data:
        raise UploadError(400, "empty_file", "the file is empty (0 bytes)", filename)
    if len(data) > limits.max_file_bytes:
        raise UploadError(
            413, "file_too_large",
            f"the file has {len(data):,} bytes; the limit is {limits.max_file_bytes:,}", filename,
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as header:
                image_format, (width, height) = header.format, header.size
    except Image.DecompressionBombError as exc:
        raise UploadError(413, "image_too_large", str(exc), filename) from None
    except UnidentifiedImageError:
        raise UploadError(
            415, "not_an_image", "the content is not a recognised image", filename
        ) from None
    except Exception as exc:  # a header PIL cannot parse is bad input, not a server error
        raise UploadError(
            400, "bad_image", f"cannot read the image header: {exc}", filename
        ) from None
    if image_format not in SUPPORTED_FORMATS:
        accepted = ", ".join(sorted(SUPPORTED_FORMATS))
        raise UploadError(
            415, "unsupported_format", f"{image_format} images are not accepted ({accepted})",
            filename,
        )
    if max(width, height) > limits.max_side or width * height > limits.max_pixels:
        raise UploadError(
            413, "image_too_large",
            f"the image is {width}x{height}; the limits are {limits.max_side} pixels a side and "
            f"{limits.max_pixels:,} pixels in all", filename,
        )
    if max(width, height) > limits.max_aspect_ratio * max(min(width, height), 1):
        raise UploadError(
            422, "extreme_aspect_ratio",
            f"the image is {width}x{height}; its longest side may be at most "
            f"{limits.max_aspect_ratio} times its shortest", filename,
        )
    try:
        return decode(data, name=filename, min_side=min_side).image
    except ImageDecodeError as exc:
        raise UploadError(400, "bad_image", exc.reason, filename) from None
