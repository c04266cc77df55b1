"""Tiny generated datasets and a tiny, fast training config."""

from __future__ import annotations

from pathlib import Path

import pytest

from melanoscan.training.config import TrainConfig, apply_overrides
from tests.conftest import random_image

TINY_CLASSES = ("melanoma", "nevus", "basal_cell_carcinoma")


def make_class_folders(
    root: Path, per_class: int = 8, classes=TINY_CLASSES, seed: int = 0
) -> Path:
    """``root/<class>/<class>_<i>.png``: small random images, distinct per class and index."""
    for c, name in enumerate(classes):
        for i in range(per_class):
            path = root / name / f"{name}_{i}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            random_image(seed + 100 * c + i, (40, 36)).save(path)
    return root


@pytest.fixture
def tiny_data(tmp_path: Path) -> Path:
    return make_class_folders(tmp_path / "data")


def tiny_config(**overrides: object) -> TrainConfig:
    """assignment_cnn at 32 px, 2 epochs, in-process loading: a run takes a few seconds."""
    base = {
        "model.name": "assignment_cnn", "model.pretrained": False, "model.image_size": 32,
        "epochs": 2, "batch_size": 8, "data.num_workers": 0, "data.cache": "memory",
        "early_stopping_patience": 0,
    }
    return apply_overrides(TrainConfig(), {**base, **overrides})
