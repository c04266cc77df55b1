"""The one preprocessing recipe."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from melanoscan.preprocess import Preprocessing, shades_of_gray


def test_shorter_side_then_centre_crop() -> None:
    # A 60x30 image: left third red, middle green, right third blue.
    pixels = np.zeros((30, 60, 3), dtype=np.uint8)
    pixels[:, :20, 0] = pixels[:, 20:40, 1] = pixels[:, 40:, 2] = 255
    out = Preprocessing(image_size=16).resize(Image.fromarray(pixels))
    assert out.shape == (16, 16, 3) and out.dtype == np.uint8
    # The centre crop of the 32x16 resize keeps columns 8..23: mostly green, some red/blue edges.
    assert out[:, 8, 1].min() > 200
    assert out[:, 0, 0].mean() > 100 and out[:, -1, 2].mean() > 100


def test_normalise_unit_and_raw_range() -> None:
    pixels = np.full((2, 4, 4, 3), 255, dtype=np.uint8)
    unit = Preprocessing(8, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)).normalise(pixels)
    assert unit.shape == (2, 3, 4, 4) and unit.dtype == np.float32
    np.testing.assert_allclose(unit, 1.0)
    raw = Preprocessing(8, input_range="0_255").normalise(pixels[0])
    assert raw.shape == (3, 4, 4)
    np.testing.assert_array_equal(raw, 255.0)


@pytest.mark.parametrize("input_range", ["unit", "0_255"])
def test_normalise_of_uint8_is_the_float_formula_for_every_value(input_range: str) -> None:
    # uint8 pixels go through a lookup table; it must give the formula's float32 numbers
    # exactly, for every value in every channel, batched or not.
    recipe = Preprocessing(8, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225),
                           input_range=input_range)
    values = np.arange(256, dtype=np.uint8)
    pixels = np.stack([np.roll(values, shift) for shift in (0, 85, 170)], axis=-1)
    pixels = pixels.reshape(1, 16, 16, 3)
    by_formula = recipe.normalise(pixels.astype(np.float32))
    np.testing.assert_array_equal(recipe.normalise(pixels), by_formula)
    np.testing.assert_array_equal(recipe.normalise(pixels[0]), by_formula[0])
    assert recipe.normalise(pixels).flags.c_contiguous


def test_call_crops_the_centre_and_standardises_by_hand() -> None:
    # 12 wide, 8 tall, already 8 px on the shorter side: no resampling, only the crop of the
    # centre 8 columns (2..9), so every value is known exactly.
    y, x = np.mgrid[0:8, 0:12]
    pixels = np.stack([x * 20, y * 30, np.full_like(x, 102)], axis=-1).astype(np.uint8)
    recipe = Preprocessing(8, mean=(0.5, 0.25, 0.0), std=(0.5, 0.25, 2.0))
    out = recipe(Image.fromarray(pixels))
    assert out.shape == (3, 8, 8) and out.dtype == np.float32
    columns = np.arange(2, 10)
    np.testing.assert_allclose(out[0], np.tile((columns * 20 / 255 - 0.5) / 0.5, (8, 1)),
                               atol=1e-6)
    np.testing.assert_allclose(out[1], np.tile(((np.arange(8) * 30 / 255 - 0.25) / 0.25)[:, None],
                                               (1, 8)), atol=1e-6)
    np.testing.assert_allclose(out[2], 0.2, atol=1e-6)  # (102 / 255 - 0) / 2
    assert out[0, 0, 0] == pytest.approx((40 / 255 - 0.5) / 0.5, abs=1e-6)  # column 2: red 40


def test_call_scales_the_shorter_side_with_pil_bicubic() -> None:
    # 16 wide, 32 tall: the shorter side goes to 8 (PIL bicubic, 8x16), then rows 4..11.
    pixels = np.zeros((32, 16, 3), dtype=np.uint8)
    pixels[:8] = (255, 0, 0)
    pixels[8:24] = (51, 102, 204)  # the centre band, (0.2, 0.4, 0.8) of full scale
    pixels[24:] = (0, 0, 255)
    image = Image.fromarray(pixels)
    out = Preprocessing(8, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))(image)
    expected = np.asarray(image.resize((8, 16), Image.Resampling.BICUBIC))[4:12] / 255.0
    np.testing.assert_allclose(out, (np.moveaxis(expected, -1, 0) - 0.5) / 0.25, atol=1e-6)
    # Rows 2..5 of the crop lie far enough from the red and blue bands (the bicubic kernel
    # reaches 2 output rows each side at half scale) to be the centre colour exactly.
    centre = np.array([(0.2 - 0.5) / 0.25, (0.4 - 0.5) / 0.25, (0.8 - 0.5) / 0.25])
    np.testing.assert_allclose(out[:, 2:6], np.broadcast_to(centre[:, None, None], (3, 4, 8)),
                               atol=1e-6)
    assert out[0, 0].mean() > centre[0] and out[2, -1].mean() > centre[2]  # the bands' edges


def test_non_rgb_input_is_converted() -> None:
    grey = Image.new("L", (20, 20), 128)
    assert Preprocessing(8).resize(grey).shape == (8, 8, 3)


def test_dict_round_trip_and_validation() -> None:
    recipe = Preprocessing.for_model("assignment_cnn")
    assert Preprocessing.from_dict(recipe.to_dict()) == recipe
    assert recipe.input_range == "0_255" and recipe.image_size == 180
    with pytest.raises(ValueError, match="input_range"):
        Preprocessing(8, input_range="percent")
    with pytest.raises(ValueError, match="image_size"):
        Preprocessing(2)


def _lesion_like(seed: int) -> np.ndarray:
    """A reddish-brown random image whose channels stay below 200, so gains do not clip."""
    rng = np.random.default_rng(seed)
    base = np.array([170.0, 120.0, 110.0]) * rng.uniform(0.5, 1.0, size=(24, 24, 1))
    return np.clip(base + rng.normal(0, 10, size=(24, 24, 3)), 0, 199).astype(np.uint8)


def test_shades_of_gray_removes_a_colour_cast() -> None:
    pixels = _lesion_like(0)
    cast = np.clip(pixels * np.array([1.25, 1.0, 0.8]), 0, 255).astype(np.float32)
    corrected, corrected_cast = shades_of_gray(pixels), shades_of_gray(cast)
    assert corrected.dtype == np.float32 and corrected.shape == pixels.shape
    # The cast is a gain per channel, which the estimate divides out, up to the overall
    # brightness the gains also changed (and rounding).
    brightness = corrected_cast.sum() / corrected.sum()
    np.testing.assert_allclose(corrected_cast, corrected * brightness, atol=1.0)
    assert np.abs(cast - pixels).max() > 30  # the cast was real
    # The channels' power means come out equal: the estimated illuminant is grey.
    power_means = np.mean((corrected / 255.0) ** 6, axis=(0, 1)) ** (1 / 6)
    np.testing.assert_allclose(power_means, power_means.mean(), rtol=0.02)


def test_shades_of_gray_keeps_grey_images_and_works_per_image_in_a_batch() -> None:
    grey = np.full((8, 8, 3), 90, dtype=np.uint8)
    np.testing.assert_allclose(shades_of_gray(grey), 90.0, rtol=1e-5)
    batch = np.stack([_lesion_like(1), _lesion_like(2)])
    np.testing.assert_allclose(shades_of_gray(batch)[1], shades_of_gray(batch[1]), rtol=1e-6)
    black = np.zeros((4, 4, 3), dtype=np.uint8)
    assert np.isfinite(shades_of_gray(black)).all()


def test_colour_constancy_is_part_of_normalise() -> None:
    pixels = _lesion_like(3)
    plain = Preprocessing(24, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    constant = Preprocessing.from_dict({**plain.to_dict(), "colour_constancy": "shades_of_gray"})
    expected = plain.normalise(shades_of_gray(pixels))
    np.testing.assert_allclose(constant.normalise(pixels), expected, rtol=1e-6)
    assert not np.allclose(plain.normalise(pixels), expected)
    with pytest.raises(ValueError, match="colour_constancy"):
        Preprocessing(8, colour_constancy="grey_world")
    # Bundles written before the option existed read as "none".
    older = {k: v for k, v in plain.to_dict().items() if k != "colour_constancy"}
    assert Preprocessing.from_dict(older).colour_constancy == "none"
