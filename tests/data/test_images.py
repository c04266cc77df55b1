import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from melanoscan.data.images import ImageDecodeError, decode, load_rgb, pixel_hash
from tests.conftest import random_image


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _png_rgb16(array: np.ndarray) -> bytes:
    """Encode a (h, w, 3) uint16 array as a 48-bit PNG (Pillow cannot write these)."""
    height, width, _ = array.shape
    header = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)
    rows = b"".join(b"\x00" + array[y].astype(">u2").tobytes() for y in range(height))
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", zlib.compress(rows))
        + _png_chunk(b"IEND", b"")
    )


@pytest.mark.parametrize("suffix", [".jpg", ".png", ".bmp", ".tif"])
def test_every_supported_format_decodes_to_rgb(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"img{suffix}"
    random_image(1, (40, 30)).save(path)
    decoded = decode(path)
    assert decoded.image.mode == "RGB"
    assert decoded.size == (40, 30)
    assert decoded.source_format in {"JPEG", "PNG", "BMP", "TIFF"}


@pytest.mark.parametrize("mode", ["L", "P", "RGBA", "LA", "CMYK", "1"])
def test_modes_are_normalised_to_rgb(tmp_path: Path, mode: str) -> None:
    path = tmp_path / ("img.tif" if mode == "CMYK" else "img.png")
    random_image(2).convert(mode).save(path)
    decoded = decode(path)
    assert decoded.image.mode == "RGB"
    assert decoded.source_mode == mode
    assert decoded.size == (32, 32)


def test_rgba_is_composited_on_black(tmp_path: Path) -> None:
    rgba = np.zeros((4, 4, 4), dtype=np.uint8)
    rgba[..., 0] = 200
    rgba[:, :2, 3] = 255  # left half opaque red, right half fully transparent
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    pixels = np.asarray(load_rgb(tmp_path / "a.png"))
    assert pixels[0, 0].tolist() == [200, 0, 0]
    assert pixels[0, 3].tolist() == [0, 0, 0]


def test_16bit_greyscale_is_scaled_not_clipped(tmp_path: Path) -> None:
    values = np.array([[0, 32768, 65535]], dtype=np.uint16)
    Image.fromarray(values).save(tmp_path / "g16.png")
    decoded = decode(tmp_path / "g16.png")
    assert decoded.source_mode.startswith("I")
    assert np.asarray(decoded.image)[0, :, 0].tolist() == [0, 128, 255]


def test_16bit_rgb_png(tmp_path: Path) -> None:
    array = np.zeros((2, 3, 3), dtype=np.uint16)
    array[..., 1] = 65535
    (tmp_path / "rgb16.png").write_bytes(_png_rgb16(array))
    pixels = np.asarray(load_rgb(tmp_path / "rgb16.png"))
    assert pixels.shape == (2, 3, 3)
    assert pixels[..., 1].min() == 255 and pixels[..., 0].max() == 0


def test_exif_rotation_is_applied(tmp_path: Path) -> None:
    image = random_image(3, (40, 20))
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    image.save(tmp_path / "rot.jpg", exif=exif)
    assert load_rgb(tmp_path / "rot.jpg").size == (20, 40)


def test_pixel_hash_ignores_file_name_and_container(tmp_path: Path) -> None:
    image = random_image(4)
    image.save(tmp_path / "a.png")
    image.save(tmp_path / "b.bmp")
    random_image(5).save(tmp_path / "c.png")
    hashes = [pixel_hash(load_rgb(tmp_path / n)) for n in ("a.png", "b.bmp", "c.png")]
    assert hashes[0] == hashes[1] != hashes[2]


def _oversized_png(width: int, height: int) -> bytes:
    """A valid-looking PNG header that declares a huge image (a decompression bomb)."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + _png_chunk(b"IEND", b"")
    )


@pytest.mark.parametrize(
    ("name", "content", "reason"),
    [
        ("empty.jpg", b"", "empty file"),
        ("text.jpg", b"this is not an image at all", "not an image"),
        ("bomb.png", _oversized_png(40000, 40000), "decompression bomb"),
    ],
)
def test_bad_files_raise_with_reason(
    tmp_path: Path, name: str, content: bytes, reason: str
) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(ImageDecodeError) as info:
        decode(path)
    assert reason in info.value.reason
    assert info.value.path == str(path)


def test_truncated_jpeg_is_rejected(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    random_image(6, (64, 64)).save(buffer, "JPEG")
    (tmp_path / "cut.jpg").write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    with pytest.raises(ImageDecodeError, match="truncated"):
        decode(tmp_path / "cut.jpg")


def test_unsupported_format_is_rejected(tmp_path: Path) -> None:
    random_image(7).save(tmp_path / "x.gif")
    with pytest.raises(ImageDecodeError, match="unsupported image format GIF"):
        decode(tmp_path / "x.gif")


def test_missing_file_and_bytes_input(tmp_path: Path) -> None:
    with pytest.raises(ImageDecodeError, match="file not found"):
        decode(tmp_path / "nope.png")
    buffer = io.BytesIO()
    random_image(8).save(buffer, "PNG")
    assert decode(buffer.getvalue()).image.mode == "RGB"
    with pytest.raises(ImageDecodeError, match="empty"):
        decode(b"")


def test_unexpected_decoder_errors_become_decode_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    random_image(9).save(tmp_path / "ok.png")

    def broken_transpose(image: Image.Image) -> Image.Image:
        raise KeyError("corrupt EXIF tag")

    monkeypatch.setattr("melanoscan.data.images.ImageOps.exif_transpose", broken_transpose)
    with pytest.raises(ImageDecodeError, match="KeyError"):
        decode(tmp_path / "ok.png")


def _large_lesion_jpeg(path: Path, size: tuple[int, int], exif: Image.Exif | None = None) -> None:
    """A smooth, lesion-like photo (what draft decoding meets), upscaled to ``size``."""
    from tests.conftest import lesion_image

    photo = lesion_image(7, 96).resize(size, Image.Resampling.BICUBIC)
    photo.save(path, quality=92, **({"exif": exif} if exif is not None else {}))


def test_large_jpeg_is_decoded_at_reduced_scale_with_the_same_model_input(
    tmp_path: Path,
) -> None:
    from melanoscan.preprocess import DRAFT_FACTOR, Preprocessing

    recipe = Preprocessing(64)
    _large_lesion_jpeg(tmp_path / "big.jpg", (1200, 900))
    full = decode(tmp_path / "big.jpg")
    reduced = decode(tmp_path / "big.jpg", min_side=recipe.decode_min_side)
    assert full.image.size == full.original_size == (1200, 900)
    assert reduced.original_size == (1200, 900)
    # 1/4 scale keeps the shorter side (225) >= 3 x 64; 1/8 (150 x 113) would not.
    assert reduced.image.size == (300, 225) and DRAFT_FACTOR == 3
    difference = np.abs(recipe.resize(full.image).astype(int)
                        - recipe.resize(reduced.image).astype(int))
    # The bound the preprocessing promises: the model sees the same image, to a grey level.
    assert difference.mean() < 0.5 and np.percentile(difference, 99) <= 3


def test_reduced_decoding_keeps_orientation_and_skips_small_or_non_jpeg(tmp_path: Path) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6
    _large_lesion_jpeg(tmp_path / "rot.jpg", (1200, 900), exif)
    rotated = decode(tmp_path / "rot.jpg", min_side=200)
    assert rotated.original_size == (900, 1200) and rotated.image.size == (225, 300)
    random_image(1, (300, 200)).save(tmp_path / "small.jpg")
    assert decode(tmp_path / "small.jpg", min_side=150).image.size == (300, 200)
    random_image(1, (1200, 900)).save(tmp_path / "big.png")
    assert decode(tmp_path / "big.png", min_side=100).image.size == (1200, 900)
