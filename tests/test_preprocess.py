"""The one preprocessing recipe."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from melanoscan.preprocess import Preprocessing
from tests.conftest import random_image


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


def test_call_equals_resize_then_normalise() -> None:
    image = random_image(3, (50, 40))
    recipe = Preprocessing.for_model("efficientnet_lite0", 32)
    np.testing.assert_array_equal(recipe(image), recipe.normalise(recipe.resize(image)))


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
