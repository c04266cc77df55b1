"""Shared fixtures: tiny images generated on the fly, so no test needs the shared data."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.fixture(scope="session", autouse=True)
def _private_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Tests (and the commands they start) never write to the user's cache: resized training
    images, the shipped model's ONNX export made on first use."""
    previous = os.environ.get("MELANOSCAN_CACHE_DIR")
    os.environ["MELANOSCAN_CACHE_DIR"] = str(tmp_path_factory.mktemp("cache"))
    yield
    if previous is None:
        del os.environ["MELANOSCAN_CACHE_DIR"]
    else:
        os.environ["MELANOSCAN_CACHE_DIR"] = previous


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


def assert_drawn_png(path: Path, size: tuple[int, int] | None = None) -> None:
    """``path`` is a PNG (``size`` pixels wide and tall, if given) with a drawing on it."""
    with Image.open(path) as image:
        assert image.format == "PNG", path
        if size is not None:
            assert image.size == size, (path, image.size)
        pixels = np.asarray(image.convert("RGB"), dtype=np.uint32)
    # Not blank: many colours (lines, text, antialiasing), and ink on more than 1% of it.
    colours = (pixels[..., 0] << 16) | (pixels[..., 1] << 8) | pixels[..., 2]
    assert len(np.unique(colours)) > 16, path
    assert (pixels.min(axis=-1) < 200).mean() > 0.01, path


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """``(bundle_dir, training_data)``: a 1-epoch assignment_cnn on 3 classes of 8 images.

    Trained once per test session and shared by every test that needs a trained bundle:
    treat both as read-only (copy the bundle before changing it).
    """
    from melanoscan.training.run import train
    from tests.training.conftest import make_class_folders, tiny_config

    root = tmp_path_factory.mktemp("bundle")
    data = make_class_folders(root / "data", per_class=8)
    result = train([data], root / "run", tiny_config(epochs=1), show_progress=False)
    assert result.bundle_dir is not None
    return result.bundle_dir, data


@pytest.fixture(scope="session")
def tiny_bundle(tiny_run: tuple[Path, Path]) -> Path:
    """The bundle of :func:`tiny_run` (torch weights only)."""
    return tiny_run[0]


@pytest.fixture(scope="session")
def onnx_bundle(tiny_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same bundle with its ONNX export, in a separate directory."""
    from melanoscan.inference.export import export_onnx

    return export_onnx(tiny_bundle, tmp_path_factory.mktemp("exported") / "bundle")


def lesion_image(seed: int, size: int = 64) -> Image.Image:
    """A dermoscopy-like picture: a noisy skin-tone field with a darker brown blob off centre."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    skin = np.array([205, 150, 120]) + rng.normal(0, 12, 3)
    pixels = np.broadcast_to(skin, (size, size, 3)).astype(np.float32).copy()
    cy, cx, r = rng.uniform(0.35, 0.65), rng.uniform(0.35, 0.65), rng.uniform(0.15, 0.3)
    blob = np.exp(-(((yy - cy) ** 2 + (xx - cx) ** 2) / r**2) * 2)[..., None]
    pixels = pixels * (1 - 0.6 * blob) + np.array([90, 50, 30]) * 0.6 * blob
    pixels += rng.normal(0, 10, pixels.shape)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def text_page(size: tuple[int, int] = (96, 128)) -> Image.Image:
    """A rendered text page: black words on white."""
    from PIL import ImageDraw

    page = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(page)
    for line in range(2, size[1] // 10):
        draw.text((4, line * 10 - 14), "Lorem ipsum dolor sit amet", fill="black")
    return page


@pytest.fixture(scope="session")
def gated_bundle(tiny_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny bundle with a dermoscopy gate fitted on generated lesion images."""
    import shutil

    import pandas as pd

    from melanoscan.evaluation.gate_fit import fit_gate

    root = tmp_path_factory.mktemp("gated")
    bundle = root / "bundle"
    shutil.copytree(tiny_bundle, bundle)
    paths = []
    for seed in range(160):
        path = root / "lesions" / f"lesion_{seed}.png"
        path.parent.mkdir(exist_ok=True)
        lesion_image(seed).save(path)
        paths.append(str(path))
    table = pd.DataFrame({"path": paths, "width": 64, "height": 64})
    fit_gate(bundle, table[:120], table[120:], show_progress=False, fitted_on="generated")
    return bundle
