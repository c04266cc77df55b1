"""Training augmentation: shapes, switches, seeding and distinct streams per DataLoader worker."""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from melanoscan.data.augment import augment, build_train_transform
from melanoscan.training.config import AugmentationConfig

SIZE = 24
OFF = AugmentationConfig(
    hflip=0.0, vflip=0.0, rotate90=0.0, affine=0.0, colour_jitter=0.0, crop_scale_min=1.0
)


def _pixels(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)


def test_default_config_keeps_shape_and_dtype_without_warnings() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        transform = build_train_transform(AugmentationConfig(), SIZE, seed=0)
        outputs = [augment(transform, _pixels(i)) for i in range(10)]
    for output in outputs:
        assert output.shape == (SIZE, SIZE, 3)
        assert output.dtype == np.uint8
    assert any(not np.array_equal(out, _pixels(i)) for i, out in enumerate(outputs))


def test_all_zero_config_is_the_identity() -> None:
    transform = build_train_transform(OFF, SIZE, seed=0)
    assert len(transform.transforms) == 0
    pixels = _pixels()
    assert np.array_equal(augment(transform, pixels), pixels)


@pytest.mark.parametrize(
    ("field", "value", "name"),
    [
        ("crop_scale_min", 0.5, "RandomResizedCrop"),
        ("hflip", 0.5, "HorizontalFlip"),
        ("vflip", 0.5, "VerticalFlip"),
        ("rotate90", 0.5, "RandomRotate90"),
        ("affine", 0.5, "Affine"),
        ("colour_jitter", 0.5, "ColorJitter"),
    ],
)
def test_each_switch_adds_its_transform(field: str, value: float, name: str) -> None:
    config = dataclasses.replace(OFF, **{field: value})
    transform = build_train_transform(config, SIZE)
    assert [type(t).__name__ for t in transform.transforms] == [name]
    assert transform.transforms[0].p == pytest.approx(1.0 if field == "crop_scale_min" else value)


def test_seed_makes_the_sequence_reproducible() -> None:
    def run(seed: int) -> list[np.ndarray]:
        transform = build_train_transform(AugmentationConfig(), SIZE, seed=seed)
        return [augment(transform, _pixels(i)) for i in range(6)]

    first, again, other = run(7), run(7), run(8)
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    assert not all(np.array_equal(a, b) for a, b in zip(first, other, strict=True))


class _Augmented(Dataset[torch.Tensor]):
    def __init__(self, transform: object) -> None:
        self.transform = transform
        self.pixels = _pixels()

    def __len__(self) -> int:
        return 4

    def __getitem__(self, index: int) -> torch.Tensor:
        return torch.from_numpy(augment(self.transform, self.pixels).copy())


def test_dataloader_workers_and_epochs_get_distinct_augmentations() -> None:
    # A copied albumentations Compose replays one random stream in every worker and epoch.
    config = dataclasses.replace(OFF, crop_scale_min=0.3, colour_jitter=1.0)
    loader = DataLoader(
        _Augmented(build_train_transform(config, SIZE, seed=0)), batch_size=1, num_workers=2
    )
    torch.manual_seed(0)
    epochs = [[batch[0] for batch in loader] for _ in range(2)]
    first, second = epochs
    assert not torch.equal(first[0], first[1])  # items 0 and 1 come from different workers
    assert not torch.equal(first[0], second[0])
    torch.manual_seed(0)
    assert all(torch.equal(a, b[0]) for a, b in zip(first, loader, strict=True))


def test_artefacts_are_left_out_at_probability_zero() -> None:
    names = [type(t).__name__ for t in build_train_transform(AugmentationConfig(), SIZE)]
    assert AugmentationConfig().artefact_probability == 0
    assert "AcquisitionArtefact" not in names


def test_artefacts_sit_between_geometry_and_colour() -> None:
    config = dataclasses.replace(
        OFF, affine=0.5, colour_jitter=0.5, artefact_probability=0.2,
        artefacts=["frame", "jpeg"], artefact_max_severity=0.6,
    )
    transforms = build_train_transform(config, SIZE).transforms
    assert [type(t).__name__ for t in transforms] == [
        "Affine", "AcquisitionArtefact", "AcquisitionArtefact", "ColorJitter"
    ]
    artefacts = transforms[1:3]
    assert [t.name for t in artefacts] == ["frame", "jpeg"]
    assert all(t.p == pytest.approx(0.2) and t.max_severity == 0.6 for t in artefacts)


def test_every_artefact_by_default_and_seeded() -> None:
    config = dataclasses.replace(OFF, artefact_probability=1.0)
    transform = build_train_transform(config, SIZE, seed=0)
    assert [t.name for t in transform.transforms] == AugmentationConfig().artefacts
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        first = [augment(transform, _pixels(i)) for i in range(3)]
    again = build_train_transform(config, SIZE, seed=0)
    for i, out in enumerate(first):
        assert out.shape == (SIZE, SIZE, 3) and out.dtype == np.uint8
        assert not np.array_equal(out, _pixels(i))
        assert np.array_equal(out, augment(again, _pixels(i)))
