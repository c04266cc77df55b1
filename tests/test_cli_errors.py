"""The command line on awkward input: it reports and keeps going, or stops in one line.

Never a traceback, never a cut-off file (issue 16).
"""

from pathlib import Path

import pandas as pd
from typer.testing import CliRunner

from melanoscan.cli import app
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
