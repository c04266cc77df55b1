"""Folder listing: links that lead nowhere and unreadable folders are reported, not dropped."""

import os
from pathlib import Path

import pytest

from melanoscan.data.folders import list_files
from melanoscan.data.images import ImageDecodeError, decode
from melanoscan.data.sources import read_source
from tests.conftest import ImageWriter


def make_awkward_tree(root: Path, write_image: ImageWriter) -> Path:
    """Two good images per class, plus a link loop, a broken link and a link to a folder."""
    for seed, name in enumerate(("nevus", "melanoma")):
        write_image(root / name / "a.png", seed=2 * seed)
        write_image(root / name / "b.png", seed=2 * seed + 1)
    (root / "nevus" / "loop.jpg").symlink_to("loop.jpg")
    (root / "melanoma" / "broken.jpg").symlink_to(root / "nowhere.jpg")
    (root / "melanoma" / "elsewhere").symlink_to(root / "nevus")
    return root


def refuse(monkeypatch: pytest.MonkeyPatch, folder: Path) -> None:
    """Make ``folder`` unreadable (tests run as root, where chmod does not stop reading)."""
    scandir = os.scandir

    def guarded(path: object = ".") -> object:
        if Path(os.fspath(path)) == folder:  # type: ignore[arg-type]
            raise PermissionError(13, "Permission denied", os.fspath(path))  # type: ignore[arg-type]
        return scandir(path)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "scandir", guarded)


def test_list_files_reports_links_and_unreadable_folders(
    tmp_path: Path, write_image: ImageWriter, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = make_awkward_tree(tmp_path, write_image)
    write_image(root / "nevus" / "locked" / "c.png", seed=9)
    refuse(monkeypatch, root / "nevus" / "locked")
    listing = list_files(root)
    assert [f.relative_to(root).as_posix() for f in listing.files] == [
        "melanoma/a.png", "melanoma/b.png", "nevus/a.png", "nevus/b.png"]
    reasons = {u.path.relative_to(root).as_posix(): u.reason for u in listing.unlisted}
    assert reasons == {
        "melanoma/elsewhere": "symbolic link to a folder (not followed)",
        "melanoma/broken.jpg": "broken symbolic link (its target is missing)",
        "nevus/locked": "folder cannot be read: Permission denied",
        "nevus/loop.jpg": "symbolic link loop (the link leads back to itself)",
    }


def test_class_folders_skip_links_and_unreadable_folders_with_reasons(
    tmp_path: Path, write_image: ImageWriter, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = make_awkward_tree(tmp_path / "data", write_image)
    write_image(root / "nevus" / "locked" / "c.png", seed=9)
    refuse(monkeypatch, root / "nevus" / "locked")
    manifest = read_source(root)
    assert len(manifest) == 4
    assert sorted((Path(s.path).name, s.reason.split(" ")[0]) for s in manifest.skipped) == [
        ("broken.jpg", "broken"), ("elsewhere", "symbolic"), ("locked", "folder"),
        ("loop.jpg", "symbolic")]


def test_csv_source_reports_a_listed_image_that_is_a_broken_link(
    tmp_path: Path, write_image: ImageWriter
) -> None:
    write_image(tmp_path / "images" / "ISIC_0000001.jpg", seed=1)
    (tmp_path / "images" / "ISIC_0000002.jpg").symlink_to(tmp_path / "gone.jpg")
    (tmp_path / "gt.csv").write_text("image_id,melanoma,seborrheic_keratosis\n"
                                     "ISIC_0000001,1.0,0.0\nISIC_0000002,0.0,0.0\n")
    manifest = read_source(tmp_path / "gt.csv")
    assert len(manifest) == 1
    reasons = sorted(s.reason for s in manifest.skipped)
    assert reasons == ["broken symbolic link (its target is missing)",
                       "image listed in CSV not found"]


def test_decoding_a_link_loop_is_a_decode_error(tmp_path: Path) -> None:
    (tmp_path / "loop.jpg").symlink_to("loop.jpg")
    with pytest.raises(ImageDecodeError, match="cannot read"):
        decode(tmp_path / "loop.jpg")
