"""A tiny trained, calibrated bundle and its ONNX export, shared by the inference tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from melanoscan.inference.export import export_onnx
from melanoscan.training.run import train
from tests.training.conftest import make_class_folders, tiny_config


@pytest.fixture(scope="module")
def tiny_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 1-epoch assignment_cnn bundle (torch weights only)."""
    root = tmp_path_factory.mktemp("bundle")
    data = make_class_folders(root / "data", per_class=8)
    result = train([data], root / "run", tiny_config(epochs=1), show_progress=False)
    assert result.bundle_dir is not None
    return result.bundle_dir


@pytest.fixture(scope="module")
def onnx_bundle(tiny_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same bundle with its ONNX export, in a separate directory."""
    return export_onnx(tiny_bundle, tmp_path_factory.mktemp("exported") / "bundle")
