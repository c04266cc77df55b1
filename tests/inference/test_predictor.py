"""Predictions: the Python API, torch/onnxruntime parity, the predict command."""

from __future__ import annotations

import csv
import io
import json
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from melanoscan.bundle import (
    BundleError,
    load_bundle,
    read_metadata,
    save_bundle,
    weights_sha256,
    write_metadata,
)
from melanoscan.cli import app
from melanoscan.data.images import load_rgb
from melanoscan.inference.backends import ON_DEMAND
from melanoscan.inference.predictor import Predictor, expand_inputs, load_model
from melanoscan.inference.render import FIXED_COLUMNS
from melanoscan.taxonomy import CLASSES
from tests.conftest import EXAMPLES, lesion_image

runner = CliRunner()
EXAMPLE_FILES = sorted(EXAMPLES.rglob("*.jpg"))


def test_onnx_and_torch_agree_on_the_examples(onnx_bundle: Path) -> None:
    images = [load_rgb(p) for p in EXAMPLE_FILES]
    torch_p = Predictor(onnx_bundle, backend="torch").probabilities(images)
    onnx_p = Predictor(onnx_bundle, backend="onnx").probabilities(images)
    assert np.abs(torch_p - onnx_p).max() < 1e-4
    assert read_metadata(onnx_bundle).exports["onnx"]["max_abs_logit_difference_vs_torch"] < 1e-4


def test_backend_choice(tiny_bundle: Path, onnx_bundle: Path) -> None:
    assert Predictor(onnx_bundle).backend == "onnx"
    assert Predictor(tiny_bundle).backend == "torch"
    with pytest.raises(ValueError, match="backend must be one of"):
        Predictor(tiny_bundle, backend="tensorrt")


def _retrained(bundle: Path, target: Path) -> torch.nn.Module:
    """A copy of ``bundle`` and a model with other weights for it."""
    shutil.copytree(bundle, target)
    model = load_bundle(target).model
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.5)
    return model


def test_a_stale_onnx_export_is_never_used(onnx_bundle: Path, tmp_path: Path) -> None:
    assert read_metadata(onnx_bundle).exports["onnx"]["weights_sha256"] == weights_sha256(
        onnx_bundle)
    copy = tmp_path / "bundle"
    model = _retrained(onnx_bundle, copy)
    torch.save(model.state_dict(), copy / "weights.pt")  # weights changed behind the export
    with pytest.warns(UserWarning, match=r"exported from other weights .*melanoscan export"):
        stale = Predictor(copy)
    assert stale.backend == "torch"
    with pytest.raises(BundleError, match=f"run: melanoscan export --model {copy}"):
        Predictor(copy, backend="onnx")
    image = load_rgb(EXAMPLE_FILES[0])
    fresh = Predictor(onnx_bundle, backend="torch").probabilities([image])
    assert np.abs(stale.probabilities([image]) - fresh).max() > 1e-3  # the new weights ran


def test_saving_new_weights_drops_the_onnx_export(onnx_bundle: Path, tmp_path: Path) -> None:
    copy = tmp_path / "bundle"
    model = _retrained(onnx_bundle, copy)
    save_bundle(copy, model, read_metadata(copy))
    assert not (copy / "model.onnx").exists()
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*exported from other weights")
        # the calibration was fitted for the previous weights, and says so
        with pytest.warns(UserWarning, match="fitted for other weights"):
            assert Predictor(copy).backend == "torch"
    with pytest.raises(BundleError, match="has no ONNX export"):
        Predictor(copy, backend="onnx")


def test_an_onnx_export_without_a_weights_record_is_used(onnx_bundle: Path,
                                                         tmp_path: Path) -> None:
    """Exports made before the record (the shipped model's) cannot be checked: used as is."""
    copy = tmp_path / "bundle"
    shutil.copytree(onnx_bundle, copy)
    metadata = read_metadata(copy)
    del metadata.exports["onnx"]["weights_sha256"]
    write_metadata(copy, metadata)
    assert Predictor(copy).backend == "onnx"


def test_python_api_accepts_paths_images_and_arrays(onnx_bundle: Path) -> None:
    model = load_model(onnx_bundle)
    path = EXAMPLE_FILES[0]
    image = load_rgb(path)
    results = model.predict([path, image, np.asarray(image)])
    assert [r.path for r in results] == [str(path), None, None]
    first = results[0]
    assert first.predicted_class in CLASSES
    assert abs(sum(first.probabilities.values()) - 1) < 1e-5
    assert first.confidence == max(first.probabilities.values())
    assert first.melanoma_probability == first.probabilities["melanoma"]
    assert first.melanoma_alert == (first.melanoma_probability >= model.alert_threshold)
    for other in results[1:]:
        assert other.probabilities == pytest.approx(first.probabilities, abs=1e-6)
    with pytest.raises(ValueError, match="uint8"):
        model.predict([np.zeros((4, 4), dtype=np.float32)])


def _model_inputs(model: Predictor, images: list) -> list[np.ndarray]:
    """What the network receives for each of ``images``, one prediction at a time."""
    seen: list[np.ndarray] = []
    run = model._run

    def recording(inputs: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        seen.append(inputs.copy())
        return run(inputs)

    model._run = recording
    for image in images:
        model.predict([image])
    return seen


def test_every_input_kind_gives_the_model_the_same_input(tiny_bundle: Path,
                                                         tmp_path: Path) -> None:
    """One decode for paths, bytes, PIL images and arrays: EXIF rotation, alpha on black."""
    model = Predictor(tiny_bundle, backend="torch")
    photo = lesion_image(3, 64).resize((64, 40))
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    rotated = tmp_path / "rotated.jpg"
    photo.save(rotated, exif=exif.tobytes(), quality=95)
    pixels = np.asarray(lesion_image(4, 48)).copy()
    pixels[:, :16] = 255  # white under the transparent strip: black once composited
    alpha = np.full((48, 48), 255, dtype=np.uint8)
    alpha[:, :16] = 0
    translucent = tmp_path / "translucent.png"
    Image.fromarray(np.dstack([pixels, alpha]), "RGBA").save(translucent)

    for path in (rotated, translucent):
        with Image.open(path) as opened:
            kinds = [path, str(path), path.read_bytes(), opened]
            if path.suffix == ".png":
                kinds.append(np.asarray(opened))
            inputs = _model_inputs(model, kinds)
            recipe = model.preprocessing
            naive = recipe.normalise(recipe.resize(opened.convert("RGB")))[None]
        for other in inputs[1:]:
            np.testing.assert_array_equal(other, inputs[0])
        assert np.abs(naive - inputs[0]).max() > 0.1  # what .convert("RGB") alone gave


def test_onnx_prediction_does_not_import_torch(onnx_bundle: Path) -> None:
    code = (
        "import sys; from melanoscan.inference.predictor import load_model; "
        f"m = load_model({str(onnx_bundle)!r}); m.predict([{str(EXAMPLE_FILES[0])!r}]); "
        "print(m.backend, 'torch' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True)
    assert done.stdout.split() == ["onnx", "False"]


def test_expand_inputs(tmp_path: Path) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(tmp_path / "a" / "b" / "x.png")
    Image.new("RGB", (8, 8)).save(tmp_path / "y.jpg")
    (tmp_path / "notes.txt").write_text("no image")
    files, missing = expand_inputs([tmp_path / "a", str(tmp_path / "*.jpg"), tmp_path / "nope",
                                    str(tmp_path / "*.bmp")])
    assert files == [tmp_path / "a" / "b" / "x.png", tmp_path / "y.jpg"]
    assert [m.reason for m in missing] == ["not found", "no file matches this pattern"]


def test_predict_csv_columns_and_order(onnx_bundle: Path) -> None:
    result = runner.invoke(app, ["predict", str(EXAMPLES), "--model", str(onnx_bundle),
                                 "--format", "csv", "-q"])
    assert result.exit_code == 0, result.output
    rows = list(csv.reader(io.StringIO(result.stdout)))
    assert rows[0] == [*FIXED_COLUMNS, *CLASSES]
    assert len(rows) == 1 + len(EXAMPLE_FILES)
    alert = FIXED_COLUMNS.index("melanoma_alert")
    assert {r[alert] for r in rows[1:]} <= {"true", "false"}
    assert {r[FIXED_COLUMNS.index("gate")] for r in rows[1:]} == {"unchecked"}  # no gate


def test_predict_json_and_skipped_files(onnx_bundle: Path, tmp_path: Path) -> None:
    folder = tmp_path / "images"
    folder.mkdir()
    load_rgb(EXAMPLE_FILES[0]).save(folder / "good.png")
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
    out = tmp_path / "out.json"
    result = runner.invoke(app, ["predict", str(folder), "--model", str(onnx_bundle),
                                 "--format", "json", "--output", str(out), "-q"])
    assert result.exit_code == 1
    payload = json.loads(out.read_text())
    assert payload["model"]["name"] and payload["model"]["version"]
    assert [Path(p["path"]).name for p in payload["predictions"]] == ["good.png"]
    assert [Path(s["path"]).name for s in payload["skipped"]] == ["broken.jpg"]
    assert "broken.jpg" in result.output


def test_predict_tta_is_the_predictor_with_tta(onnx_bundle: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.json"
    result = runner.invoke(app, ["predict", str(EXAMPLE_FILES[0]), "--model", str(onnx_bundle),
                                 "--tta", "--format", "json", "--output", str(out), "-q"])
    assert result.exit_code in (0, 3), result.output
    answered = json.loads(out.read_text())["predictions"][0]["probabilities"]
    predictor = Predictor(onnx_bundle)
    expected = predictor.predict([EXAMPLE_FILES[0]], tta=True)[0].probabilities
    assert answered == pytest.approx(expected, abs=1e-6)
    assert answered != pytest.approx(predictor.predict([EXAMPLE_FILES[0]])[0].probabilities,
                                      abs=1e-6)


def test_predict_table_is_a_triage_list(onnx_bundle: Path) -> None:
    result = runner.invoke(app, ["predict", str(EXAMPLES), "--model", str(onnx_bundle), "-q"])
    assert result.exit_code == 0
    text = " ".join(result.output.split())
    assert f"{len(EXAMPLE_FILES)} images," in text and "0 skipped" in text
    cells = [line.split("│") for line in result.output.splitlines() if line.count("│") > 5]
    values = [float(c[4]) for c in cells if c[1].strip().isdigit()]  # first line of each row
    assert len(values) == len(EXAMPLE_FILES)
    assert values == sorted(values, reverse=True)


def test_predict_bad_input(tmp_path: Path, onnx_bundle: Path) -> None:
    result = runner.invoke(app, ["predict", str(tmp_path / "none"), "--model", str(onnx_bundle)])
    assert result.exit_code == 2 and "no image found" in result.output
    result = runner.invoke(app, ["predict", str(EXAMPLES), "--model", str(tmp_path)])
    assert result.exit_code == 2 and "not a model bundle" in " ".join(result.output.split())
    result = runner.invoke(app, ["predict", str(EXAMPLES), "--model", str(onnx_bundle),
                                 "--format", "xml"])
    assert result.exit_code == 2


def test_explain_command_writes_an_overlay(tiny_bundle: Path, tmp_path: Path) -> None:
    out = tmp_path / "overlay.png"
    result = runner.invoke(app, ["explain", str(EXAMPLE_FILES[0]), "--model", str(tiny_bundle),
                                 "--output", str(out), "--target", "melanoma"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("melanoma (probability")
    with Image.open(out) as overlay:
        assert overlay.size == (32, 32)
    result = runner.invoke(app, ["explain", str(EXAMPLE_FILES[0]), "--model", str(tiny_bundle),
                                 "--output", str(out), "--target", "freckle"])
    assert result.exit_code == 2


def test_triage_report(onnx_bundle: Path, tmp_path: Path) -> None:
    out = tmp_path / "triage"
    result = runner.invoke(app, ["predict", str(EXAMPLES / "melanoma"), str(EXAMPLES / "nevus"),
                                 "--model", str(onnx_bundle), "--report", str(out), "-q"])
    assert result.exit_code == 0, result.output
    page = (out / "report.html").read_text()
    assert "Research tool, not a medical device" in page
    assert page.count('class="card') == 4
    assert len(list((out / "images").glob("*_gradcam.png"))) == 4
    assert 'src="images/0001.jpg"' in page


def test_version_names_the_weights(onnx_bundle: Path, tmp_path: Path) -> None:
    predictor = Predictor(onnx_bundle)
    assert predictor.version == weights_sha256(onnx_bundle)[:12]
    assert predictor.created == read_metadata(onnx_bundle).created
    copy = tmp_path / "copy"
    shutil.copytree(onnx_bundle, copy)
    assert Predictor(copy).version == predictor.version  # same weights, same version


def _shipped_without_onnx(bundle: Path, target: Path) -> Path:
    """A copy of ``bundle`` with no ONNX file, marked to get one on demand (as the packaged
    model is shipped)."""
    shutil.copytree(bundle, target, ignore=shutil.ignore_patterns("*.onnx"))
    metadata = read_metadata(target)
    metadata.exports = {ON_DEMAND: True}
    write_metadata(target, metadata)
    return target


def test_a_bundle_shipped_without_onnx_exports_it_once_into_the_cache(
        tiny_bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MELANOSCAN_CACHE_DIR", str(tmp_path / "cache"))
    shipped = _shipped_without_onnx(tiny_bundle, tmp_path / "shipped")
    with pytest.warns(UserWarning, match="exporting it once"):
        first = Predictor(shipped)
    assert first.backend == "onnx"
    exported = tmp_path / "cache" / "onnx" / weights_sha256(shipped)[:16] / "model.onnx"
    assert exported.is_file() and not (shipped / "model.onnx").exists()
    stamp = exported.stat().st_mtime_ns
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*exporting it once")
        second = Predictor(_shipped_without_onnx(tiny_bundle, tmp_path / "another copy"))
    assert second.backend == "onnx" and exported.stat().st_mtime_ns == stamp  # reused
    assert Predictor(shipped, backend="onnx").backend == "onnx"
    images = [load_rgb(p) for p in EXAMPLE_FILES]
    reference = Predictor(shipped, backend="torch").probabilities(images)
    assert np.abs(first.probabilities(images) - reference).max() < 1e-4
    # A broken leftover in its place is replaced, not trusted.
    (exported.parent / "bundle.json").write_text("{}")
    with pytest.warns(UserWarning, match="exporting it once"):
        assert Predictor(shipped).backend == "onnx"
    # Only bundles marked for it: an ordinary bundle without ONNX runs on torch.
    assert Predictor(tiny_bundle).backend == "torch"


def test_a_failed_on_demand_export_falls_back_to_torch(
        tiny_bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / "not a folder"
    blocker.write_text("a file where the cache should be")
    monkeypatch.setenv("MELANOSCAN_CACHE_DIR", str(blocker))
    shipped = _shipped_without_onnx(tiny_bundle, tmp_path / "shipped")
    with pytest.warns(UserWarning, match="could not export"):
        assert Predictor(shipped).backend == "torch"
