"""A served tiny bundle, and helpers to change a bundle's alert threshold."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from melanoscan.bundle import read_metadata, write_metadata
from melanoscan.inference.predictor import Predictor
from melanoscan.serving import ServeLimits, create_app


def with_alert_threshold(bundle: Path, copy: Path, threshold: float) -> Path:
    """A copy of ``bundle`` whose melanoma alert fires at ``threshold``."""
    shutil.copytree(bundle, copy)
    metadata = read_metadata(copy)
    calibration = {**metadata.calibration, "alert_threshold": threshold}
    write_metadata(copy, replace(metadata, calibration=calibration))
    return copy


@pytest.fixture(scope="module")
def predictor(onnx_bundle: Path) -> Predictor:
    return Predictor(onnx_bundle)


def client_for(predictor: Predictor, **limits: int) -> TestClient:
    return TestClient(create_app(predictor, ServeLimits(**limits)))


@pytest.fixture(scope="module")
def client(predictor: Predictor) -> TestClient:
    return client_for(predictor)
