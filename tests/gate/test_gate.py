"""The dermoscopy gate: quality limits, fitting, the bundle round trip, every prediction path."""

from __future__ import annotations

import csv
import io
import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageFilter
from typer.testing import CliRunner

from melanoscan.bundle import BundleError, read_metadata, write_metadata
from melanoscan.cli import app
from melanoscan.gate import (
    GATE_FILE,
    NOT_DERMOSCOPY,
    OK,
    POOR_QUALITY,
    UNCHECKED,
    QualityLimits,
    fit_contrast,
    fit_statistics,
    load_gate,
    measure_quality,
    save_gate,
)
from melanoscan.inference.predictor import Predictor
from melanoscan.preprocess import Preprocessing
from tests.conftest import lesion_image, text_page

runner = CliRunner()
RECIPE = Preprocessing(image_size=64)


def _quality(image: Image.Image) -> str | None:
    return QualityLimits(min_side=32).problem(measure_quality(RECIPE.resize(image), image.size))


def test_quality_limits_name_the_problem() -> None:
    lesion = lesion_image(0, 96)
    assert _quality(lesion) is None
    assert "blank" in _quality(Image.new("RGB", (96, 96), (200, 150, 120)))
    assert "too small" in _quality(lesion.resize((20, 20)))
    dark = Image.fromarray((np.asarray(lesion) * 0.2).astype(np.uint8))
    assert "under-exposed" in _quality(dark)
    bright = Image.fromarray(np.clip(np.asarray(lesion) * 3.0, 0, 255).astype(np.uint8))
    assert "over-exposed" in _quality(bright)
    assert "blurred" in _quality(lesion.filter(ImageFilter.GaussianBlur(6)))


def test_fit_statistics_sets_the_threshold_on_held_out_images() -> None:
    rng = np.random.default_rng(0)
    fit, held = rng.normal(size=(300, 20)), rng.normal(size=(200, 20))
    gate = fit_statistics(fit, held, components=8, quantile=0.99, margin=1.0)
    assert gate.info["held_out_flagged"] == pytest.approx(0.01, abs=0.006)
    assert (gate.scores(rng.normal(size=(500, 20)) + 6.0) > 1).all()
    with pytest.raises(ValueError, match="other model"):
        gate.scores(np.zeros((1, 7)))
    with pytest.raises(ValueError, match="at least 10"):
        fit_statistics(fit[:5], held)


def test_contrast_score_refuses_what_lies_close_to_dermoscopy() -> None:
    # Negatives that sit inside the distance's threshold (a shift along one feature that the
    # dermoscopy images barely vary) are caught only by the contrast score.
    rng = np.random.default_rng(1)
    fit, held = rng.normal(size=(400, 12)), rng.normal(size=(200, 12))
    fit[:, 0] *= 0.2
    held[:, 0] *= 0.2
    near = rng.normal(size=(120, 12))
    near[:, 0] = 0.2 * near[:, 0] + 0.9
    gate = fit_statistics(fit, held, components=4)
    assert (gate.scores(near[60:]) > 1).mean() < 0.4
    fit_contrast(gate, fit, near[:60], held, margin=0.5, info={"contrast_fitted_on": "near"})
    assert gate.contrast is not None and gate.info["contrast_negatives"] == 60
    assert (gate.scores(near[60:]) > 1).mean() > 0.95  # negatives it did not learn from
    assert gate.info["held_out_flagged"] == pytest.approx((gate.scores(held) > 1).mean())
    assert gate.info["held_out_flagged"] < 0.02
    with pytest.raises(ValueError, match="at least 10 negative"):
        fit_contrast(gate, fit, near[:5], held)


def test_a_flat_image_and_a_text_page_are_flagged(gated_bundle: Path) -> None:
    predictor = Predictor(gated_bundle)
    flat, page, lesion = predictor.predict(
        [Image.new("RGB", (64, 64), (180, 120, 100)), text_page(), lesion_image(999)])
    assert (flat.gate, page.gate, lesion.gate) == (POOR_QUALITY, NOT_DERMOSCOPY, OK)
    assert "blank" in flat.gate_reason and "greyscale" in page.gate_reason
    assert lesion.gate_reason == "" and lesion.gate_score is not None and lesion.gate_score < 1
    for refused in (flat, page):
        assert not refused.melanoma_alert and refused.flagged and not refused.gate_overridden
    assert flat.headline == "poor quality" and page.headline == "not dermoscopy"


def test_gate_off_scores_anyway_and_marks_it(gated_bundle: Path, tmp_path: Path) -> None:
    always = tmp_path / "bundle"
    shutil.copytree(gated_bundle, always)
    metadata = read_metadata(always)
    metadata.calibration = {**metadata.calibration, "alert_threshold": 0.0}  # alert on all
    write_metadata(always, metadata)
    predictor = Predictor(always)
    gated, ungated = (predictor.predict([text_page()], gate=flag)[0] for flag in (True, False))
    assert gated.flagged and not gated.melanoma_alert and gated.headline == "not dermoscopy"
    assert ungated.flagged and ungated.gate_overridden and ungated.melanoma_alert
    assert ungated.headline == "melanoma suspected (gate off: not dermoscopy)"
    assert ungated.to_dict()["headline"] == ungated.headline


def test_fitted_gate_round_trips_through_the_bundle(gated_bundle: Path, tmp_path: Path) -> None:
    metadata = read_metadata(gated_bundle)
    block = metadata.gate
    assert block["file"] == GATE_FILE and (gated_bundle / GATE_FILE).is_file()
    assert block["fitted_on"] == "generated" and block["fit_images"] == 120
    gate = load_gate(gated_bundle, metadata)
    assert gate is not None
    copy = tmp_path / "copy"
    copy.mkdir()
    (copy / "weights.pt").write_bytes((gated_bundle / "weights.pt").read_bytes())
    save_gate(copy, gate, metadata)
    again = load_gate(copy, metadata)
    assert again is not None and again.threshold == gate.threshold
    features = np.random.default_rng(0).normal(size=(4, gate.feature_size))
    np.testing.assert_allclose(again.scores(features), gate.scores(features))
    rng = np.random.default_rng(2)
    negatives = rng.normal(size=(20, gate.feature_size)) + 3.0
    held = rng.normal(size=(20, gate.feature_size))
    fit_contrast(gate, rng.normal(size=(40, gate.feature_size)), negatives, held)
    save_gate(copy, gate, metadata)
    assert metadata.gate["method"].endswith("+logistic-contrast")
    contrasted = load_gate(copy, metadata)
    assert contrasted is not None and contrasted.contrast is not None
    assert contrasted.contrast_threshold == gate.contrast_threshold
    np.testing.assert_allclose(contrasted.scores(features), gate.scores(features))
    (copy / GATE_FILE).write_bytes(b"torn")
    with pytest.warns(UserWarning, match="does not match"):
        assert load_gate(copy, metadata) is None


def test_a_gate_for_other_weights_is_switched_off(gated_bundle: Path, tmp_path: Path) -> None:
    copy = tmp_path / "bundle"
    shutil.copytree(gated_bundle, copy)
    state = torch.load(copy / "weights.pt", weights_only=True)
    torch.save({k: v + 1 if v.is_floating_point() else v for k, v in state.items()},
               copy / "weights.pt")
    with pytest.warns(UserWarning, match="other weights"):
        assert load_gate(copy, read_metadata(copy)) is None


def test_an_old_bundle_without_a_gate_loads_and_says_so(tiny_bundle: Path) -> None:
    assert read_metadata(tiny_bundle).gate == {}  # too few images for training to fit one
    with pytest.warns(UserWarning, match="no dermoscopy gate"):
        predictor = Predictor(tiny_bundle)
    result = predictor.predict([text_page()])[0]
    assert (result.gate, result.gate_score, result.flagged) == (UNCHECKED, None, False)


def test_predict_command_lists_flagged_images_and_exits_3(
    gated_bundle: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "images"
    folder.mkdir()
    lesion_image(500).save(folder / "lesion.png")
    Image.new("RGB", (64, 64), (90, 90, 200)).save(folder / "flat.png")
    text_page().save(folder / "page.png")
    args = ["predict", str(folder), "--model", str(gated_bundle), "-q"]
    table = runner.invoke(app, args)
    assert table.exit_code == 3, table.output
    text = " ".join(table.output.split())
    assert "POOR" in text and "DERMOSCOPY" in text and "2 flagged by the gate" in text
    rows = list(csv.DictReader(io.StringIO(runner.invoke(app, [*args, "--format", "csv"]).stdout)))
    by_name = {Path(r["path"]).name: r for r in rows}
    assert by_name["flat.png"]["headline"] == "poor quality"
    assert by_name["page.png"]["gate"] == NOT_DERMOSCOPY
    assert by_name["lesion.png"]["gate"] == OK
    assert all(r["melanoma_alert"] == "false" for n, r in by_name.items() if n != "lesion.png")
    result = runner.invoke(app, [*args, "--format", "json", "--no-gate"])
    assert result.exit_code == 3
    payload = json.loads(result.stdout)
    assert payload["model"]["gate"] is True
    flagged = [p for p in payload["predictions"] if p["gate"] != OK]
    assert len(flagged) == 2 and all(p["gate_overridden"] for p in flagged)
    assert all("gate off" in p["headline"] for p in flagged)


def test_explain_refuses_a_flagged_image_unless_told(gated_bundle: Path, tmp_path: Path) -> None:
    page, lesion = tmp_path / "page.png", tmp_path / "lesion.png"
    text_page().save(page)
    lesion_image(502).save(lesion)
    overlay = tmp_path / "overlay.png"
    base = ["explain", "--model", str(gated_bundle), "--output", str(overlay)]
    refused = runner.invoke(app, [*base, str(page)])
    assert refused.exit_code == 3 and not overlay.exists()
    assert "not dermoscopy" in refused.output and "--no-gate" in " ".join(refused.output.split())
    forced = runner.invoke(app, [*base, str(page), "--no-gate"])
    assert forced.exit_code == 0 and overlay.is_file()
    assert "gate off" in " ".join(forced.output.split())
    overlay.unlink()
    fine = runner.invoke(app, [*base, str(lesion)])
    assert fine.exit_code == 0 and overlay.is_file() and "gate off" not in fine.output


def test_triage_report_leads_with_the_verdict(gated_bundle: Path, tmp_path: Path) -> None:
    folder = tmp_path / "images"
    folder.mkdir()
    lesion_image(501).save(folder / "lesion.png")
    text_page().save(folder / "page.png")
    out = tmp_path / "report"
    result = runner.invoke(app, ["predict", str(folder), "--model", str(gated_bundle),
                                 "--report", str(out), "-q"])
    assert result.exit_code == 3
    page = (out / "report.html").read_text()
    assert page.count('class="card flagged"') == 1 and "NOT DERMOSCOPY" in page
    assert "1 flagged" in " ".join(page.split())
    assert len(list((out / "images").glob("*_gradcam.png"))) == 1  # none for the refused one


def test_onnx_export_carries_the_features(gated_bundle: Path, tmp_path: Path) -> None:
    from melanoscan.inference.export import export_onnx

    exported = export_onnx(gated_bundle, tmp_path / "exported")
    assert read_metadata(exported).exports["onnx"]["outputs"] == ["logits", "features"]
    images = [lesion_image(7), text_page()]
    onnx = Predictor(exported, backend="onnx").predict(images)
    torch_ = Predictor(exported, backend="torch").predict(images)
    for a, b in zip(onnx, torch_, strict=True):
        assert a.gate == b.gate and a.gate_score == pytest.approx(b.gate_score, rel=1e-4)


def test_an_onnx_file_from_before_the_gate(gated_bundle: Path, onnx_bundle: Path,
                                           tmp_path: Path) -> None:
    """An export with only a logits output: auto falls back to torch, onnx refuses."""
    import onnx

    copy = tmp_path / "bundle"
    shutil.copytree(gated_bundle, copy)
    old = onnx.load(str(onnx_bundle / "model.onnx"))
    if len(old.graph.output) > 1:  # exported by this version: drop the features output
        del old.graph.output[1]
    onnx.save(old, str(copy / "model.onnx"))
    with pytest.warns(UserWarning, match="exported before the dermoscopy gate"):
        assert Predictor(copy).backend == "torch"
    with pytest.raises(BundleError, match="melanoscan export"):
        Predictor(copy, backend="onnx")


def test_evaluate_reports_the_flagged_images(gated_bundle: Path, tmp_path: Path) -> None:
    from melanoscan.evaluation.evaluate import evaluate

    data = tmp_path / "data"
    for i in range(6):
        for name in ("melanoma", "nevus"):
            (data / name).mkdir(parents=True, exist_ok=True)
            lesion_image(700 + i + (50 if name == "nevus" else 0)).save(
                data / name / f"{name}_{i}.png")
    text_page().save(data / "nevus" / "page.png")
    report = evaluate(Predictor(gated_bundle), [data], bootstrap_samples=20,
                      show_progress=False).report
    gate = report["gate"]
    assert gate["available"] and gate["flagged"] >= 1 and gate["not_dermoscopy"] >= 1
    assert any(Path(f["path"]).name == "page.png" for f in gate["flagged_images"])
    without = gate["results_without_flagged"]["plain"]
    assert without["images"] == report["results"]["plain"]["images"] - gate["flagged"]


def test_training_fits_no_gate_on_too_few_images(tiny_bundle: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert load_gate(tiny_bundle, read_metadata(tiny_bundle)) is None


def test_calibrate_gate_only_refits_from_the_training_data(
    tiny_bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from melanoscan.evaluation import gate_fit
    from tests.training.conftest import make_class_folders

    data = make_class_folders(tmp_path / "data", per_class=8)  # the tiny bundle's own images
    for seed in range(10):  # and images it never saw
        lesion_image(seed).save(data / "nevus" / f"new_{seed}.png")
    bundle = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, bundle)
    args = ["calibrate", "--model", str(bundle), "--gate-only", "--data", str(data), "-q"]
    refused = runner.invoke(app, args)
    assert refused.exit_code == 2
    assert "pass the data it was trained on" in " ".join(refused.output.split())
    # Too few validation images here (5): every image it did not train on sets the threshold.
    monkeypatch.setattr(gate_fit, "MIN_FIT_IMAGES", 10)
    monkeypatch.setattr(gate_fit, "MIN_THRESHOLD_IMAGES", 10)
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    block = read_metadata(bundle).gate
    trained = read_metadata(bundle).training["counts"]
    assert block["fit_images"] == sum(trained["train"].values())
    assert block["threshold_images"] == sum(trained["val"].values()) + 10
    assert load_gate(bundle, read_metadata(bundle)) is not None
    assert "contrast_negatives" not in block

    negatives = tmp_path / "negatives"
    negatives.mkdir()
    for index in range(12):
        text_page((96 + 4 * index, 128)).save(negatives / f"page_{index}.png")
    listed = tmp_path / "negatives.csv"
    listed.write_text("path\n" + "".join(f"negatives/page_{i}.png\n" for i in range(12)))
    for source in (negatives, listed):
        result = runner.invoke(app, [*args, "--negatives", str(source)])
        assert result.exit_code == 0, result.output
        assert "learnt against 12 non-dermoscopy images" in " ".join(result.output.split())
        block = read_metadata(bundle).gate
        assert block["contrast_negatives"] == 12 and block["contrast_fitted_on"] == str(source)
    assert load_gate(bundle, read_metadata(bundle)).contrast is not None
    few = runner.invoke(app, [*args, "--negatives", str(negatives / "page_0.png")])
    assert few.exit_code == 2
    no_gate = [a for a in args if a != "--gate-only"]
    assert runner.invoke(app, [*no_gate, "--negatives", str(negatives)]).exit_code == 2
