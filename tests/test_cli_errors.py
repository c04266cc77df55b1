"""The command line on awkward input: it reports and keeps going, or stops in one line.

Never a traceback, never a cut-off file (issue 16).
"""

import json
import os
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner, Result

from melanoscan.cli import app
from melanoscan.data.sources import read_source
from melanoscan.files import NAME_ERRORS
from tests.conftest import ImageWriter
from tests.data.test_folders import make_awkward_tree

runner = CliRunner()


def flat(text: str) -> str:
    """``text`` without whitespace: the console wraps long lines, even inside words."""
    return "".join(text.split())


def make_tree(root: Path, write_image: ImageWriter, per_class: int = 6) -> Path:
    for c, name in enumerate(("nevus", "melanoma")):
        for i in range(per_class):
            write_image(root / name / f"{name}{i}.png", seed=100 * c + i)
    return root


def test_predict_reports_link_loops_and_broken_links_and_goes_on(
    tmp_path: Path, write_image: ImageWriter, tiny_bundle: Path
) -> None:
    root = make_awkward_tree(tmp_path / "data", write_image)
    out = tmp_path / "out.csv"
    result = runner.invoke(app, ["predict", str(root), "--model", str(tiny_bundle), "-q",
                                 "--no-gate", "--output", str(out)])
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert len(pd.read_csv(out)) == 4
    text = flat(result.stderr)
    assert flat("loop.jpg: symbolic link loop") in text
    assert flat("broken.jpg: broken symbolic link") in text
    assert flat("elsewhere: symbolic link to a folder (not followed)") in text


def test_audit_and_split_list_links_as_skipped(tmp_path: Path, write_image: ImageWriter) -> None:
    root = make_tree(tmp_path / "data", write_image)
    (root / "nevus" / "loop.jpg").symlink_to("loop.jpg")
    (root / "melanoma" / "broken.jpg").symlink_to(tmp_path / "nowhere.jpg")
    result = runner.invoke(app, ["audit", str(root), "-q"])
    assert result.exit_code == 0, result.output
    assert "Skipped files: 2" in result.output
    out = tmp_path / "split" / "manifest.csv"
    result = runner.invoke(app, ["split", str(root), "--out", str(out), "-q"])
    assert result.exit_code == 0, result.output
    skipped = pd.read_csv(out.with_name("manifest.skipped.csv"))
    assert sorted(Path(p).name for p in skipped["path"]) == ["broken.jpg", "loop.jpg"]


ODD_NAME = "lesion_\udcff.png"
"""The file name bytes ``lesion_\\xff.png`` (not UTF-8), as Python gives them on Linux."""


def odd_tree(root: Path, write_image: ImageWriter) -> Path:
    make_tree(root, write_image)
    try:
        write_image(root / "nevus" / ODD_NAME, seed=50)
    except (UnicodeEncodeError, OSError):
        pytest.skip("this file system refuses file names that are not UTF-8")
    return root


def test_predict_writes_names_that_are_not_utf8(
    tmp_path: Path, write_image: ImageWriter, tiny_bundle: Path
) -> None:
    root = odd_tree(tmp_path / "data", write_image)
    base = ["predict", str(root), "--model", str(tiny_bundle), "-q", "--no-gate"]
    result = runner.invoke(app, [*base, "--format", "csv", "--output", str(tmp_path / "p.csv"),
                                 "--report", str(tmp_path / "report")])
    assert result.exit_code == 0, result.output
    assert b"lesion_\xff.png" in (tmp_path / "p.csv").read_bytes()  # the name's own bytes
    table = pd.read_csv(tmp_path / "p.csv", encoding_errors=NAME_ERRORS)
    assert all(Path(p).exists() for p in table["path"]) and len(table) == 13
    page = (tmp_path / "report" / "report.html").read_text(encoding="utf-8")
    assert "lesion_\\xff.png" in page
    result = runner.invoke(app, [*base, "--format", "json", "--output", str(tmp_path / "p.json")])
    assert result.exit_code == 0, result.output
    paths = [p["path"] for p in json.loads((tmp_path / "p.json").read_text())["predictions"]]
    assert str(root / "nevus" / ODD_NAME) in paths
    result = runner.invoke(app, [*base, "--format", "csv"])  # on stdout
    assert result.exit_code == 0, result.output
    assert b"lesion_\xff.png" in result.stdout_bytes


def test_audit_and_split_write_names_that_are_not_utf8(
    tmp_path: Path, write_image: ImageWriter
) -> None:
    root = odd_tree(tmp_path / "data", write_image)
    (root / "melanoma" / "lesion_\udcfe.txt").write_text("not an image")  # a skipped file
    result = runner.invoke(app, ["audit", str(root), "-q", "--out", str(tmp_path / "audit")])
    assert result.exit_code == 0, result.output
    page = (tmp_path / "audit" / "report.html").read_text(encoding="utf-8")
    assert "lesion_\\xfe.txt" in page
    assert json.loads((tmp_path / "audit" / "report.json").read_text())["skipped"]
    out = tmp_path / "split" / "manifest.csv"
    result = runner.invoke(app, ["split", str(root), "--out", str(out), "-q"])
    assert result.exit_code == 0, result.output
    manifest = read_source(out)  # melanoscan reads its manifest back: the paths name the files
    assert len(manifest) == 13 and all(Path(p).exists() for p in manifest.images["path"])
    skipped = pd.read_csv(out.with_name("manifest.skipped.csv"), encoding_errors=NAME_ERRORS)
    assert [Path(p).name for p in skipped["path"]] == ["lesion_\udcfe.txt"]


def one_line_error(result: Result, *needles: str) -> None:
    """Exit code 2 and a one-line message holding ``needles``; no traceback."""
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    assert result.stderr.startswith("error:") and result.stderr.count("error:") == 1
    for needle in needles:
        assert flat(needle) in flat(result.stderr)


def test_csvs_that_are_not_utf8_are_one_line_errors(
    tmp_path: Path, write_image: ImageWriter
) -> None:
    write_image(tmp_path / "images" / "ISIC_0000001.jpg", seed=1)
    latin = tmp_path / "ISIC-2017_GroundTruth.csv"
    latin.write_bytes(b"image_id,melanoma,seborrheic_keratosis\nISIC_0000001,1.0,0.0\n"
                      b"ISIC_0000002,0.0,0.0 # l\xe9sion\n")
    one_line_error(runner.invoke(app, ["audit", str(latin), "-q"]), str(latin),
                   "is not UTF-8 text (byte 0xe9")
    binary = tmp_path / "binary" / "labels.csv"
    binary.parent.mkdir()
    binary.write_bytes(bytes(range(256)) * 4)
    one_line_error(runner.invoke(app, ["split", str(binary.parent), "--out",
                                       str(tmp_path / "m.csv"), "-q"]), str(binary))
    one_line_error(runner.invoke(app, ["evaluate", "--data", str(latin), "-q"]), str(latin))


def test_a_manifest_with_latin1_file_names_is_read_as_bytes(
    tmp_path: Path, write_image: ImageWriter
) -> None:
    root = odd_tree(tmp_path / "data", write_image)
    manifest = tmp_path / "m.csv"
    manifest.write_bytes(b"path,label,source_label,taxonomy,source,split,group_id,image_id,"
                         b"content_hash\n" + os.fsencode(root / "nevus" / ODD_NAME)
                         + b",nevus,nevus,isic9,x,,,,\n")
    assert read_source(manifest).images["path"].tolist() == [str(root / "nevus" / ODD_NAME)]


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["predict", "IMAGES", "--output", "DIR"], "--output DIR is a folder; give a file name"),
        (["predict", "IMAGES", "--output", "FILE/x.csv"], "FILE is a file, not a folder"),
        (["predict", "IMAGES", "--report", "FILE"], "--report FILE is a file, not a folder"),
        (["predict", "IMAGES", "--report", "FILE/a/b"], "FILE is a file, not a folder"),
        (["audit", "IMAGES", "--out", "FILE"], "--out FILE is a file, not a folder"),
        (["split", "IMAGES", "--out", "DIR"], "--out DIR is a folder; give a file name"),
        (["evaluate", "--data", "IMAGES", "--out", "FILE"], "--out FILE is a file, not a folder"),
        (["explain", "IMAGES/nevus/nevus0.png", "--output", "DIR"], "--output DIR is a folder"),
        (["export", "--model", "BUNDLE", "--output", "FILE"], "--output FILE is a file"),
        (["export", "--model", "DIR/missing"], "DIR/missing is not a model bundle"),
        (["serve", "--port", "70000"], "--port must be between 0 and 65535, got 70000"),
    ],
)
def test_bad_output_paths_and_options_are_one_line_errors(
    tmp_path: Path, write_image: ImageWriter, args: list[str], needle: str
) -> None:
    places = {"IMAGES": make_tree(tmp_path / "images", write_image), "DIR": tmp_path / "dir",
              "FILE": tmp_path / "file", "BUNDLE": Path("src/melanoscan/model")}
    places["DIR"].mkdir()
    places["FILE"].write_text("in the way")

    def place(text: str) -> str:
        for name, path in places.items():
            text = text.replace(name, str(path))
        return text

    one_line_error(runner.invoke(app, [place(a) for a in args] + ["-q"] * (args[0] in (
        "predict", "audit", "split", "evaluate"))), place(needle))
    assert places["FILE"].read_text() == "in the way"


def test_an_unwritable_report_folder_is_a_one_line_error(
    tmp_path: Path, write_image: ImageWriter, monkeypatch: pytest.MonkeyPatch
) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    access = os.access

    def refuse_locked(path: object, mode: int, *args: object, **kwargs: object) -> bool:
        if Path(path) == locked and mode & os.W_OK:  # type: ignore[arg-type]
            return False
        return access(path, mode, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "access", refuse_locked)
    result = runner.invoke(app, ["predict", str(make_tree(tmp_path / "images", write_image)),
                                 "--report", str(locked), "-q"])
    one_line_error(result, f"cannot write in {locked} (permission denied)")


def test_onnx_backend_without_an_onnx_export_is_a_one_line_error(
    tmp_path: Path, write_image: ImageWriter, tiny_bundle: Path
) -> None:
    images = make_tree(tmp_path / "images", write_image)
    result = runner.invoke(app, ["predict", str(images), "--model", str(tiny_bundle),
                                 "--backend", "onnx", "-q"])
    one_line_error(result, "has no ONNX export (model.onnx is missing)")
