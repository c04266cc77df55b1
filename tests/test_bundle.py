"""The model bundle: save, load, predict the same; clear errors for bad bundles."""

from __future__ import annotations

import errno
import hashlib
import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import melanoscan
from melanoscan import taxonomy
from melanoscan.bundle import (
    FORMAT_VERSION,
    BundleError,
    BundleMetadata,
    installed_versions,
    load_bundle,
    onnx_state,
    read_metadata,
    save_bundle,
    staged_directory,
    weights_sha256,
    write_metadata,
)
from melanoscan.inference.predictor import Predictor
from melanoscan.models import create_model
from melanoscan.preprocess import Preprocessing
from tests.conftest import random_image


def _save(path: Path) -> tuple[torch.nn.Module, Preprocessing]:
    torch.manual_seed(0)
    recipe = Preprocessing.for_model("assignment_cnn", 32)
    model = create_model("assignment_cnn", len(taxonomy.CLASSES), input_size=32).eval()
    metadata = BundleMetadata(
        name="tiny",
        classes=list(taxonomy.CLASSES),
        architecture={"name": "assignment_cnn", "kwargs": {"input_size": 32}},
        preprocessing=recipe.to_dict(),
        validation_metrics={"accuracy": 0.5},
    )
    hashes = pd.DataFrame({"content_hash": ["a", "b"], "label": ["nevus", "melanoma"],
                           "split": ["train", "val"], "path": ["x", "y"]})
    save_bundle(path, model, metadata, training_images=hashes)
    return model, recipe


def test_round_trip_predicts_the_same(tmp_path: Path) -> None:
    model, recipe = _save(tmp_path / "b")
    bundle = melanoscan.load_bundle(tmp_path / "b")
    images = [random_image(i, (40, 30)) for i in range(3)]
    inputs = torch.from_numpy(np.stack([recipe(im) for im in images]))
    with torch.no_grad():
        expected = torch.softmax(model(inputs), dim=1).numpy()
    probabilities = Predictor(tmp_path / "b").probabilities(images)
    np.testing.assert_allclose(probabilities, expected, atol=1e-6)
    assert probabilities.shape == (3, 9)
    assert bundle.classes == list(taxonomy.CLASSES)
    assert bundle.metadata.calibration["temperature"] is None
    assert list(bundle.training_images()["content_hash"]) == ["a", "b"]
    assert "path" not in bundle.training_images().columns


def test_temperature_softens_probabilities(tmp_path: Path) -> None:
    _save(tmp_path / "b")
    images = [random_image(1, (32, 32))]
    before = Predictor(tmp_path / "b").probabilities(images)
    metadata = read_metadata(tmp_path / "b")
    metadata.calibration["temperature"] = 5.0
    write_metadata(tmp_path / "b", metadata)
    after = Predictor(tmp_path / "b").probabilities(images)
    assert after.max() < before.max()
    assert after.argmax() == before.argmax()


def test_not_a_bundle(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match=r"not a model bundle: bundle.json is missing"):
        load_bundle(tmp_path)


def test_newer_format_is_refused(tmp_path: Path) -> None:
    _save(tmp_path / "b")
    meta = tmp_path / "b" / "bundle.json"
    values = json.loads(meta.read_text())
    values["format_version"] = FORMAT_VERSION + 1
    meta.write_text(json.dumps(values))
    with pytest.raises(BundleError, match=r"format 2, newer than this melanoscan .*; upgrade"):
        load_bundle(tmp_path / "b")


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda d: (d / "bundle.json").write_text("{not json"), "not valid JSON"),
        (lambda d: (d / "bundle.json").write_text('{"format": "x"}'), "not melanoscan bundle"),
        (lambda d: (d / "weights.pt").unlink(), "weights.pt is missing"),
        (lambda d: (d / "weights.pt").write_bytes(b"garbage"), "does not load into"),
    ],
    ids=["bad-json", "foreign-json", "no-weights", "corrupt-weights"],
)
def test_broken_bundle(tmp_path: Path, damage, message: str) -> None:
    _save(tmp_path / "b")
    damage(tmp_path / "b")
    with pytest.raises(BundleError, match=message):
        load_bundle(tmp_path / "b")


def test_weights_of_another_architecture(tmp_path: Path) -> None:
    _save(tmp_path / "b")
    metadata = read_metadata(tmp_path / "b")
    metadata.architecture = {"name": "assignment_cnn", "kwargs": {"input_size": 64}}
    write_metadata(tmp_path / "b", metadata)
    with pytest.raises(BundleError, match="does not load into assignment_cnn"):
        load_bundle(tmp_path / "b")


def test_staged_directory_replaces_the_folder_only_when_complete(tmp_path: Path) -> None:
    target = tmp_path / "bundle"
    target.mkdir()
    (target / "weights.pt").write_text("old")
    with pytest.raises(OSError, match="No space left"), staged_directory(target) as staging:
        (staging / "weights.pt").write_text("ne")
        raise OSError(errno.ENOSPC, "No space left on device")
    assert (target / "weights.pt").read_text() == "old"
    assert list(tmp_path.iterdir()) == [target]  # no staging folder left behind
    with staged_directory(target) as staging:
        (staging / "bundle.json").write_text("new")
    assert [p.name for p in target.iterdir()] == ["bundle.json"]
    assert list(tmp_path.iterdir()) == [target]


def test_save_drops_an_onnx_export_of_other_weights(tmp_path: Path) -> None:
    model, _ = _save(tmp_path / "b")
    metadata = read_metadata(tmp_path / "b")
    (tmp_path / "b" / "model.onnx").write_bytes(b"an export of earlier weights")
    metadata.exports["onnx"] = {"file": "model.onnx", "weights_sha256": "0" * 64}
    save_bundle(tmp_path / "b", model, metadata)
    assert not (tmp_path / "b" / "model.onnx").exists()
    assert "onnx" not in read_metadata(tmp_path / "b").exports
    # one without any record (copied in by hand) is dropped too
    (tmp_path / "b" / "model.onnx").write_bytes(b"unrecorded")
    save_bundle(tmp_path / "b", model, read_metadata(tmp_path / "b"))
    assert not (tmp_path / "b" / "model.onnx").exists()


def test_save_keeps_an_onnx_export_of_the_same_weights(tmp_path: Path) -> None:
    model, _ = _save(tmp_path / "b")
    metadata = read_metadata(tmp_path / "b")
    (tmp_path / "b" / "model.onnx").write_bytes(b"an export of these weights")
    metadata.exports["onnx"] = {"file": "model.onnx",
                                "weights_sha256": weights_sha256(tmp_path / "b")}
    save_bundle(tmp_path / "b", model, metadata)
    assert onnx_state(tmp_path / "b", read_metadata(tmp_path / "b")) == "current"


def test_onnx_state(tmp_path: Path) -> None:
    _save(tmp_path / "b")
    weights = (tmp_path / "b" / "weights.pt").read_bytes()
    assert weights_sha256(tmp_path / "b") == hashlib.sha256(weights).hexdigest()
    metadata = read_metadata(tmp_path / "b")
    assert onnx_state(tmp_path / "b", metadata) == "absent"
    (tmp_path / "b" / "model.onnx").write_bytes(b"onnx")
    metadata.exports["onnx"] = {"file": "model.onnx"}  # exported before the hash was recorded
    assert onnx_state(tmp_path / "b", metadata) == "unknown"
    metadata.exports["onnx"]["weights_sha256"] = hashlib.sha256(weights).hexdigest()
    assert onnx_state(tmp_path / "b", metadata) == "current"
    (tmp_path / "b" / "weights.pt").write_bytes(weights + b"changed")
    assert onnx_state(tmp_path / "b", metadata) == "stale"


def _version_warnings(path: Path) -> list[str]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        load_bundle(path)
    return [str(w.message) for w in caught if "package versions" in str(w.message)]


def test_versions_are_recorded_and_checked_on_load(tmp_path: Path) -> None:
    _save(tmp_path / "b")
    metadata = read_metadata(tmp_path / "b")
    assert metadata.versions == installed_versions()
    assert metadata.versions["torch"] and metadata.versions["numpy"]
    assert _version_warnings(tmp_path / "b") == []
    metadata.versions["numpy"] = "1.0.0"
    metadata.versions["Pillow"] = "2.0.0"
    metadata.versions["torch"] = metadata.versions["torch"].split("+")[0] + "+cu999"
    write_metadata(tmp_path / "b", metadata)
    [message] = _version_warnings(tmp_path / "b")  # one warning for all, not an error
    assert "numpy 1.0.0 -> " in message and "Pillow 2.0.0 -> " in message
    assert "torch" not in message  # another build of the same version
    values = json.loads((tmp_path / "b" / "bundle.json").read_text())
    del values["versions"]  # a bundle from before the record
    (tmp_path / "b" / "bundle.json").write_text(json.dumps(values))
    assert _version_warnings(tmp_path / "b") == []
