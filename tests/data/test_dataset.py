"""The lesion dataset: items, unreadable files, label encoding and class-balancing weights."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from torch.utils.data import DataLoader, WeightedRandomSampler

from melanoscan.data.cache import ResizedImageLoader
from melanoscan.data.dataset import (
    LesionDataset,
    balanced_sample_weights,
    inverse_frequency_weights,
)
from melanoscan.data.images import load_rgb, pixel_hash
from melanoscan.data.manifest import make_table
from melanoscan.preprocess import Preprocessing
from melanoscan.taxonomy import CLASSES
from tests.conftest import ImageWriter

PREP = Preprocessing(image_size=16, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
LABELS = ("melanoma", "nevus", "nevus", "vascular_lesion")


@pytest.fixture
def table(tmp_path: Path, write_image: ImageWriter) -> pd.DataFrame:
    rows = []
    for index, label in enumerate(LABELS):
        path = write_image(tmp_path / label / f"img{index}.png", seed=index, size=(30, 20))
        rows.append({"path": str(path), "label": label, "content_hash": pixel_hash(load_rgb(path))})
    return make_table(rows)


def _dataset(table: pd.DataFrame, tmp_path: Path, **kwargs: Any) -> LesionDataset:
    loader = ResizedImageLoader(PREP, "disk", tmp_path / "cache")
    return LesionDataset(table, loader, PREP, **kwargs)


def test_items_are_normalised_images_with_labels(table: pd.DataFrame, tmp_path: Path) -> None:
    dataset = _dataset(table, tmp_path)
    assert len(dataset) == 4
    image, label, index, ok = dataset[3]
    assert image.dtype == torch.float32
    assert image.shape == (3, 16, 16)
    assert (label, index, ok) == (CLASSES.index("vascular_lesion"), 3, True)
    expected = PREP(load_rgb(table.at[3, "path"]))
    assert np.allclose(image.numpy(), expected)
    assert dataset.labels.tolist() == [CLASSES.index(name) for name in LABELS]


def test_transform_runs_between_resize_and_normalise(table: pd.DataFrame, tmp_path: Path) -> None:
    seen: list[tuple[tuple[int, ...], np.dtype]] = []

    def flip(pixels: np.ndarray) -> np.ndarray:
        seen.append((pixels.shape, pixels.dtype))
        return pixels[:, ::-1]

    image, *_ = _dataset(table, tmp_path, transform=flip)[0]
    assert seen == [((16, 16, 3), np.dtype(np.uint8))]
    expected = PREP.normalise(PREP.resize(load_rgb(table.at[0, "path"]))[:, ::-1])
    assert np.allclose(image.numpy(), expected)


def test_unreadable_file_gives_a_flagged_zero_image(table: pd.DataFrame, tmp_path: Path) -> None:
    dataset = _dataset(table, tmp_path)
    Path(table.at[1, "path"]).unlink()
    image, label, index, ok = dataset[1]
    assert (label, index, ok) == (CLASSES.index("nevus"), 1, False)
    assert torch.equal(image, torch.zeros(3, 16, 16))
    images, labels, indices, oks = next(iter(DataLoader(dataset, batch_size=4)))
    assert images.shape == (4, 3, 16, 16)
    assert labels.dtype == torch.int64
    assert indices.tolist() == [0, 1, 2, 3]
    assert oks.tolist() == [True, False, True, True]


def test_content_hash_column_is_optional(table: pd.DataFrame, tmp_path: Path) -> None:
    dataset = _dataset(table.drop(columns=["content_hash"]), tmp_path)
    assert dataset[0][3]
    assert not (tmp_path / "cache").exists()


def test_unknown_labels_are_listed(table: pd.DataFrame, tmp_path: Path) -> None:
    table.loc[0, "label"] = "freckle"
    table.loc[1, "label"] = "mole"
    with pytest.raises(ValueError, match=r"unknown label\(s\) \['freckle', 'mole'\]"):
        _dataset(table, tmp_path)


def test_custom_class_order(table: pd.DataFrame, tmp_path: Path) -> None:
    classes = ("vascular_lesion", "nevus", "melanoma")
    assert _dataset(table, tmp_path, classes=classes).labels.tolist() == [2, 1, 1, 0]


def test_balanced_sample_weights() -> None:
    weights = balanced_sample_weights(np.array([0, 0, 0, 2]))
    assert weights == pytest.approx([1 / 3, 1 / 3, 1 / 3, 1.0])
    assert balanced_sample_weights(np.array([], dtype=np.int64)).shape == (0,)


def test_inverse_frequency_weights() -> None:
    weights = inverse_frequency_weights(np.array([0, 0, 0, 1]), 3)
    assert weights.dtype == torch.float32
    # n = 4 samples over k = 2 present classes: 4 / (2 * 3), 4 / (2 * 1), absent class 0.
    assert weights.tolist() == pytest.approx([2 / 3, 2.0, 0.0])
    with pytest.raises(ValueError, match="labels must lie"):
        inverse_frequency_weights(np.array([0, 3]), 3)
    # 2 images among 1,000: uncapped weight 1000 / (2 * 2) = 250, capped at 10.
    rare = np.array([0] * 998 + [1] * 2)
    assert inverse_frequency_weights(rare, 2)[1] == pytest.approx(250.0)
    assert inverse_frequency_weights(rare, 2, max_weight=10.0).tolist() == pytest.approx(
        [1000 / (2 * 998), 10.0])


def test_balanced_sampler_draws_classes_equally() -> None:
    labels = np.array([0] * 90 + [1] * 9 + [2])
    sampler = WeightedRandomSampler(
        torch.as_tensor(balanced_sample_weights(labels)),
        num_samples=3000,
        replacement=True,
        generator=torch.Generator().manual_seed(0),
    )
    shares = np.bincount(labels[list(sampler)], minlength=3) / 3000
    assert shares == pytest.approx([1 / 3] * 3, abs=0.04)


@pytest.mark.parametrize("power", [0.0, 0.5, 1.0])
def test_sampler_power_sets_class_shares(power: float) -> None:
    labels = np.array([0] * 100 + [1] * 25 + [2] * 4)
    weights = balanced_sample_weights(labels, power)
    shares = np.bincount(labels, weights=weights) / weights.sum()
    expected = np.array([100, 25, 4], dtype=float) ** (1 - power)
    assert shares == pytest.approx(expected / expected.sum())
