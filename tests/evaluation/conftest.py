"""The session's tiny trained bundle, and labelled data it has never seen."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.training.conftest import make_class_folders


@pytest.fixture
def trained(tiny_run: tuple[Path, Path]) -> tuple[Path, Path]:
    """``(bundle_dir, training_data)`` of the session's ``tiny_run`` (tests/conftest.py)."""
    return tiny_run


@pytest.fixture
def unseen(tmp_path: Path) -> Path:
    """A Train/Test tree of new images (seeds the training data never used)."""
    make_class_folders(tmp_path / "unseen" / "Test", per_class=5, seed=5000)
    make_class_folders(tmp_path / "unseen" / "Train", per_class=2, seed=7000)
    return tmp_path / "unseen"
