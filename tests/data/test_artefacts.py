"""Synthetic acquisition artefacts: shape, determinism, and that each does what it claims."""

from __future__ import annotations

import albumentations as A
import cv2
import numpy as np
import pytest

from melanoscan.data.artefacts import ARTEFACTS, AcquisitionArtefact, apply_artefact
from melanoscan.training.config import ARTEFACT_NAMES

SIDE = 128


def _lesion(seed: int = 0, shape: tuple[int, int] = (SIDE, SIDE)) -> np.ndarray:
    """A smooth, mid-grey textured image: room to darken, brighten and blur, no clipping."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(60, 200, (16, 16, 3), dtype=np.uint8)
    return cv2.resize(coarse, shape[::-1], interpolation=cv2.INTER_CUBIC)


def _change(name: str, severity: float, seeds: range = range(6)) -> float:
    """Mean absolute pixel change, averaged over a few images and draws."""
    return float(np.mean([
        np.abs(apply_artefact(name, _lesion(s), np.random.default_rng(s), severity)
               .astype(np.int16) - _lesion(s)).mean()
        for s in seeds
    ]))


def test_config_knows_every_artefact() -> None:
    # The config keeps its own copy of the names (it must not import cv2); they must agree.
    assert tuple(ARTEFACTS) == ARTEFACT_NAMES


@pytest.mark.parametrize("name", ARTEFACTS)
@pytest.mark.parametrize("shape", [(SIDE, SIDE), (90, 150), (20, 24)])
def test_keeps_shape_and_dtype_and_leaves_the_input_alone(
    name: str, shape: tuple[int, int]
) -> None:
    image = _lesion(shape=shape)
    before = image.copy()
    out = apply_artefact(name, image, np.random.default_rng(0), 0.5)
    assert out.shape == (*shape, 3)
    assert out.dtype == np.uint8
    assert np.array_equal(image, before)


@pytest.mark.parametrize("name", ARTEFACTS)
def test_seeded_draws_repeat(name: str) -> None:
    def draw(seed: int) -> np.ndarray:
        return apply_artefact(name, _lesion(), np.random.default_rng(seed), 0.7)

    assert np.array_equal(draw(3), draw(3))
    assert any(not np.array_equal(draw(3), draw(s)) for s in (4, 5, 6))


@pytest.mark.parametrize("name", ARTEFACTS)
def test_stronger_severity_changes_more(name: str) -> None:
    mild, strong = _change(name, 0.0), _change(name, 1.0)
    assert strong > mild
    assert strong > 0.5  # grey levels: visibly there at full strength


def test_frame_darkens_the_corners_not_the_centre() -> None:
    image = np.full((SIDE, SIDE, 3), 180, dtype=np.uint8)
    out = apply_artefact("frame", image, np.random.default_rng(0), 1.0)
    corner = 6
    for ys, xs in [(slice(0, corner), slice(0, corner)), (slice(-corner, None), slice(0, corner)),
                   (slice(0, corner), slice(-corner, None)),
                   (slice(-corner, None), slice(-corner, None))]:
        assert out[ys, xs].max() <= 25
    centre = out[SIDE // 2 - 10: SIDE // 2 + 10, SIDE // 2 - 10: SIDE // 2 + 10]
    assert np.array_equal(centre, image[:20, :20])


def test_blur_lowers_laplacian_variance() -> None:
    blocks = np.random.default_rng(0).integers(0, 256, (28, 28, 3), dtype=np.uint8)
    image = cv2.resize(blocks, (224, 224), interpolation=cv2.INTER_NEAREST)  # sharp edges

    def sharpness(pixels: np.ndarray) -> float:
        return float(cv2.Laplacian(cv2.cvtColor(pixels, cv2.COLOR_RGB2GRAY), cv2.CV_64F).var())

    blurred = apply_artefact("blur", image, np.random.default_rng(0), 0.5)
    assert sharpness(blurred) < 0.5 * sharpness(image)


@pytest.mark.parametrize("name", ["jpeg", "low_resolution"])
def test_degradations_change_pixels_but_keep_the_mean(name: str) -> None:
    image = _lesion()
    out = apply_artefact(name, image, np.random.default_rng(0), 0.8)
    assert np.abs(out.astype(np.int16) - image).mean() > 0.5
    np.testing.assert_allclose(out.mean(axis=(0, 1)), image.mean(axis=(0, 1)), atol=2.0)


def test_colour_cast_scales_the_channel_means() -> None:
    image = _lesion()
    out = apply_artefact("colour_cast", image, np.random.default_rng(0), 1.0)
    gains = out.mean(axis=(0, 1)) / image.mean(axis=(0, 1))
    assert np.abs(gains - 1).max() > 0.02
    assert np.all((gains > 0.74) & (gains < 1.26))  # at most 1 +- (0.05 + 0.2)
    assert np.ptp(gains) > 0.01  # a cast, not a brightness change


@pytest.mark.parametrize("name", ["hair", "ruler"])
def test_overlays_only_add_darker_marks(name: str) -> None:
    image = np.full((SIDE, SIDE, 3), 230, dtype=np.uint8)
    out = apply_artefact(name, image, np.random.default_rng(1), 1.0)
    changed = np.any(out != image, axis=2)
    assert 0.001 < changed.mean() < 0.5
    assert out.max() <= 230


def test_unknown_name_or_severity_is_refused() -> None:
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="unknown artefact 'smudge'"):
        apply_artefact("smudge", _lesion(), rng)
    for severity in (-0.1, 1.5):
        with pytest.raises(ValueError, match="severity must be in"):
            apply_artefact("blur", _lesion(), rng, severity)
    with pytest.raises(ValueError, match="unknown artefact"):
        AcquisitionArtefact("smudge")


def test_transform_is_seeded_by_its_compose() -> None:
    def run(seed: int) -> list[np.ndarray]:
        transform = A.Compose([AcquisitionArtefact("hair", max_severity=1.0, p=1.0)], seed=seed)
        return [transform(image=_lesion(i))["image"] for i in range(3)]

    first, again, other = run(1), run(1), run(2)
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    assert not all(np.array_equal(a, b) for a, b in zip(first, other, strict=True))
    assert not np.array_equal(first[0], _lesion(0))


def test_transform_probability_and_severity_bound() -> None:
    image = _lesion()
    never = A.Compose([AcquisitionArtefact("frame", p=0.0)], seed=0)
    assert np.array_equal(never(image=image)["image"], image)

    def mean_change(max_severity: float) -> float:
        always = A.Compose([AcquisitionArtefact("frame", max_severity, p=1.0)], seed=0)
        return float(np.mean([np.abs(always(image=image)["image"].astype(np.int16) - image).mean()
                              for _ in range(8)]))

    # Severities are drawn from [0, max_severity]: mild frames keep a larger disc.
    assert mean_change(0.1) < mean_change(1.0)
