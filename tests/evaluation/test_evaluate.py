"""Evaluation end to end: figures, overlap refusal, taxonomy mapping, report files, calibrate."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from melanoscan import taxonomy
from melanoscan.bundle import read_metadata
from melanoscan.cli import app
from melanoscan.evaluation.evaluate import EvaluationError, evaluate
from melanoscan.inference.predictor import Predictor
from melanoscan.taxonomy import ISIC2018_CODES
from tests.conftest import assert_drawn_png, random_image

runner = CliRunner()


def test_scores_a_split_with_intervals(trained, unseen: Path) -> None:
    bundle_dir, _ = trained
    evaluation = evaluate(Predictor(bundle_dir), [unseen], split="test", tta=True,
                          bootstrap_samples=50, show_progress=False)
    report = evaluation.report
    assert report["data"]["scored"] == 15 and report["taxonomy"] == "isic9"
    assert report["data"]["training_overlap"]["count"] == 0
    assert set(report["results"]) == {"plain", "tta"}
    for metrics in report["results"].values():
        low, high = metrics["balanced_accuracy"]["ci95"]
        assert low <= metrics["balanced_accuracy"]["value"] <= high
        assert metrics["melanoma"]["positives"] == 5
        assert sum(map(sum, metrics["confusion_matrix"])) == 15
    np.testing.assert_allclose(evaluation.probabilities["plain"].sum(axis=1), 1.0, rtol=1e-6)
    # The plain result is what `melanoscan predict` gives for the same image.
    row = evaluation.table.index[evaluation.table["path"].str.endswith("melanoma_0.png")][0]
    predicted = Predictor(bundle_dir).predict([random_image(5000, (40, 36))])[0]
    expected = [predicted.probabilities[name] for name in taxonomy.CLASSES]
    np.testing.assert_allclose(evaluation.probabilities["plain"][row], expected, atol=1e-5)
    assert report["model"]["backend"] == "torch"  # the tiny bundle has no ONNX export


def test_training_images_are_not_scored(trained) -> None:
    bundle_dir, training_data = trained
    bundle = Predictor(bundle_dir)
    with pytest.raises(EvaluationError, match="also in the model's training data"):
        evaluate(bundle, [training_data], show_progress=False)
    flagged = evaluate(bundle, [training_data], score_training_overlap=True,
                       bootstrap_samples=20, show_progress=False)
    overlap = flagged.report["data"]["training_overlap"]
    assert overlap["count"] == 24 and overlap["scored"] is True
    assert flagged.report["data"]["scored"] == 24


def test_seven_class_ground_truth_is_scored_in_isic2018_codes(trained, tmp_path: Path) -> None:
    bundle_dir, _ = trained
    folder = tmp_path / "isic2018"
    folder.mkdir()
    lines = ["image," + ",".join(code.upper() for code in ISIC2018_CODES)]
    for i, code in enumerate(["mel", "nv", "bcc", "mel", "nv", "bkl"]):
        random_image(9000 + i, (40, 36)).save(folder / f"ISIC_{9000000 + i}.jpg")
        lines.append(f"ISIC_{9000000 + i}," + ",".join(
            "1.0" if c == code else "0.0" for c in ISIC2018_CODES))
    (folder / "GroundTruth.csv").write_text("\n".join(lines) + "\n")
    report = evaluate(Predictor(bundle_dir), [folder], bootstrap_samples=20,
                      show_progress=False).report
    assert report["taxonomy"] == "isic2018" and report["classes"] == list(ISIC2018_CODES)
    assert "summed" in report["mapping_note"]
    assert report["results"]["plain"]["per_class"]["bkl"]["support"] == 1


@pytest.mark.slow
def test_cli_writes_the_report(trained, unseen: Path, tmp_path: Path) -> None:
    bundle_dir, _ = trained
    out = tmp_path / "report"
    result = runner.invoke(app, ["evaluate", "--model", str(bundle_dir), "--data", str(unseen),
                                 "--split", "test", "--out", str(out), "--json", "-q",
                                 "--bootstrap", "20"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["data"]["scored"] == 15
    low, high = report["results"]["plain"]["accuracy"]["ci95"]
    assert low <= report["results"]["plain"]["accuracy"]["value"] <= high
    for name in ("report.json", "report.html", "predictions.csv"):
        assert (out / name).stat().st_size > 0, name
    for name in ("confusion_matrix.png", "roc_curves.png", "reliability.png"):
        assert_drawn_png(out / name)
    refused = runner.invoke(app, ["evaluate", "--model", str(bundle_dir), "--data", str(unseen),
                                  "--bootstrap", "0"])
    assert refused.exit_code == 2 and "--bootstrap" in refused.output


def test_cli_bad_input(trained, tmp_path: Path) -> None:
    bundle_dir, _ = trained
    result = runner.invoke(app, ["evaluate", "--model", str(tmp_path), "--data", str(tmp_path)])
    assert result.exit_code == 2 and "not a model bundle" in result.output
    result = runner.invoke(app, ["evaluate", "--model", str(bundle_dir), "--data",
                                 str(tmp_path / "nowhere")])
    assert result.exit_code == 2 and "not found" in result.output


def test_calibrate_on_held_out_images(trained, unseen: Path, tmp_path: Path) -> None:
    bundle_dir, training_data = trained
    copy = tmp_path / "bundle"
    shutil.copytree(bundle_dir, copy)
    result = runner.invoke(app, ["calibrate", "--model", str(copy), "--data", str(unseen),
                                 "--split", "test", "--target-sensitivity", "0.8", "-q"])
    assert result.exit_code == 0, result.output
    calibration = read_metadata(copy).calibration
    assert calibration["target_sensitivity"] == 0.8
    assert "unseen" in calibration["fitted_on"] and "15 images, 5 melanoma" in (
        calibration["fitted_on"])
    refused = runner.invoke(app, ["calibrate", "--model", str(copy), "--data",
                                  str(training_data), "-q"])
    assert refused.exit_code == 2 and "used to train the model" in refused.output
