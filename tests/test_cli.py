"""The command line end to end, on the bundled examples and tiny generated trees."""

import json
from pathlib import Path

import pandas as pd
from typer.testing import CliRunner

from melanoscan import __version__
from melanoscan.cli import app
from tests.conftest import EXAMPLES, ImageWriter, assert_drawn_png

runner = CliRunner()


def test_help_and_version() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    assert "audit" in result.output and "split" in result.output
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert __version__ in result.output


def test_audit_examples_json(tmp_path: Path) -> None:
    result = runner.invoke(app, ["audit", str(EXAMPLES), "--json", "-q", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["schema_version"] == 2
    assert report["total_images"] == 18
    assert report["counts"]["all"] == {name: 2 for name in report["counts"]["all"]}
    assert report["summary"]["label_conflict_groups"] == 0
    assert (tmp_path / "report.html").exists()
    assert_drawn_png(tmp_path / "class_distribution.png", size=(990, 495))
    assert_drawn_png(tmp_path / "samples.png")


def test_audit_readable_summary() -> None:
    result = runner.invoke(app, ["audit", str(EXAMPLES), "-q"])
    assert result.exit_code == 0
    text = " ".join(result.output.split())  # undo the console's line wrapping
    assert "Images per class (18 images)" in text
    assert "imbalance ratio 1.0" in text
    assert "Label conflicts (same image, different classes): 0 groups" in text


def test_missing_source_is_a_clear_error(tmp_path: Path) -> None:
    result = runner.invoke(app, ["audit", str(tmp_path / "nowhere")])
    assert result.exit_code == 2
    assert "data source not found" in result.stderr
    assert "Traceback" not in result.output


def test_audit_with_only_bad_images_fails(tmp_path: Path) -> None:
    (tmp_path / "nevus").mkdir()
    (tmp_path / "nevus" / "a.jpg").write_text("nope")
    result = runner.invoke(app, ["audit", str(tmp_path), "-q"])
    assert result.exit_code == 2
    assert "no readable image" in result.stderr


def test_split_writes_manifest_and_exclusions(tmp_path: Path, write_image: ImageWriter) -> None:
    data = tmp_path / "data"
    for index in range(10):
        for name in ("nevus", "melanoma"):
            write_image(data / "Train" / name / f"{name}{index}.png", seed=index * 2 + len(name))
    write_image(data / "Test" / "melanoma" / "t.png", seed=8)  # a copy of Train/melanoma/melanoma0
    out = tmp_path / "split" / "manifest.csv"
    result = runner.invoke(app, ["split", str(data), "--out", str(out), "-q", "--seed", "1"])
    assert result.exit_code == 0, result.output
    table = pd.read_csv(out)
    assert sorted(table["split"].unique()) == ["test", "train", "val"]
    excluded = pd.read_csv(out.with_name("manifest.excluded.csv"))
    assert [Path(p).name for p in excluded["path"]] == ["melanoma0.png"]
    assert excluded["reason"].str.contains("evaluation image").all()
    result = runner.invoke(app, ["split", str(data), "--out", str(out), "--folds", "3", "-q"])
    assert result.exit_code == 0
    assert sorted(pd.read_csv(out)["fold"].unique()) == [-1, 0, 1, 2]


def test_split_resolves_by_authority_and_holds_sources_out(
    tmp_path: Path, write_image: ImageWriter
) -> None:
    folders, official, held = tmp_path / "isic9", tmp_path / "isic2017", tmp_path / "held"
    for index in range(8):
        for seed, name in enumerate(("nevus", "melanoma")):
            write_image(folders / name / f"{name}{index}.png", seed=100 * seed + index)
    # isic9 files ISIC_0000001 under seborrheic keratosis; the ISIC 2017 ground truth says
    # melanoma.
    write_image(folders / "seborrheic keratosis" / "ISIC_0000001.jpg", seed=300)
    write_image(official / "images" / "ISIC_0000001.jpg", seed=301)
    (official / "ISIC-2017_Training_Part3_GroundTruth.csv").write_text(
        "image_id,melanoma,seborrheic_keratosis\nISIC_0000001,1.0,0.0\n"
    )
    # The held-out source holds a copy of nevus0.png.
    write_image(held / "nevus" / "copy.png", seed=0)
    write_image(held / "melanoma" / "other.png", seed=400)
    out = tmp_path / "split" / "manifest.csv"
    args = ["split", str(folders), str(official), "--out", str(out), "-q",
            "--resolve-by-authority", "--holdout", str(held)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    relabelled = pd.read_csv(out.with_name("manifest.relabelled.csv"))
    assert relabelled[["old_label", "label"]].values.tolist() == [
        ["seborrheic_keratosis", "melanoma"]]
    table = pd.read_csv(out)
    holdout = table[table["split"] == "holdout"]
    assert sorted(Path(p).name for p in holdout["path"]) == ["copy.png", "other.png"]
    excluded = pd.read_csv(out.with_name("manifest.excluded.csv"))
    reasons = dict(zip((Path(p).name for p in excluded["path"]), excluded["reason"], strict=True))
    assert sorted(reasons) == ["ISIC_0000001.jpg", "nevus0.png"]
    assert "evaluation image" in reasons["nevus0.png"]
    # No longer a conflict: one copy of the image is trained on, as melanoma.
    assert "another copy" in reasons["ISIC_0000001.jpg"]
    assert table.loc[table["image_id"] == "ISIC_0000001", "label"].tolist() == ["melanoma"]
