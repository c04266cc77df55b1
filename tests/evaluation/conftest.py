"""A tiny trained bundle and labelled data it has never seen, shared by the evaluation tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from melanoscan.training.run import train
from tests.training.conftest import make_class_folders, tiny_config


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """``(bundle_dir, training_data)``: a 1-epoch assignment_cnn on 3 classes."""
    root = tmp_path_factory.mktemp("trained")
    data = make_class_folders(root / "data", per_class=8)
    result = train([data], root / "run", tiny_config(epochs=1), show_progress=False)
    assert result.bundle_dir is not None
    return result.bundle_dir, data


@pytest.fixture
def unseen(tmp_path: Path) -> Path:
    """A Train/Test tree of new images (seeds the training data never used)."""
    make_class_folders(tmp_path / "unseen" / "Test", per_class=5, seed=5000)
    make_class_folders(tmp_path / "unseen" / "Train", per_class=2, seed=7000)
    return tmp_path / "unseen"
