"""Shared fixtures: tiny images generated on the fly, so no test needs the shared data."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def random_image(seed: int, size: tuple[int, int] = (32, 32)) -> Image.Image:
    """A blocky random RGB image: distinct seeds give clearly different perceptual hashes."""
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 256, size=(8, 8, 3), dtype=np.uint8)
    return Image.fromarray(blocks).resize(size, Image.Resampling.NEAREST)


ImageWriter = Callable[..., Path]


@pytest.fixture
def write_image() -> ImageWriter:
    """``write_image(path, seed=0, size=(32, 32), image=None)``: save a PNG/JPEG/... by suffix."""

    def write(
        path: Path,
        seed: int = 0,
        size: tuple[int, int] = (32, 32),
        image: Image.Image | None = None,
    ) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        (image or random_image(seed, size)).save(path)
        return path

    return write


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 1-epoch assignment_cnn bundle (torch weights only), trained once per test session."""
    from melanoscan.training.run import train
    from tests.training.conftest import make_class_folders, tiny_config

    root = tmp_path_factory.mktemp("bundle")
    data = make_class_folders(root / "data", per_class=8)
    result = train([data], root / "run", tiny_config(epochs=1), show_progress=False)
    assert result.bundle_dir is not None
    return result.bundle_dir


@pytest.fixture(scope="session")
def onnx_bundle(tiny_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same bundle with its ONNX export, in a separate directory."""
    from melanoscan.inference.export import export_onnx

    return export_onnx(tiny_bundle, tmp_path_factory.mktemp("exported") / "bundle")
