"""Output files are written whole or not at all, whatever the file names they hold."""

from pathlib import Path

import pandas as pd
import pytest

from melanoscan.files import NAME_ERRORS, atomic_write, printable, write_csv, write_text


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    target = write_text(tmp_path / "out.csv", "old\n")

    def half_then_fail(tmp: Path) -> None:
        tmp.write_text("half a fi")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space"):
        atomic_write(target, half_then_fail)
    assert target.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["out.csv"]


def test_names_that_are_not_utf8_keep_their_bytes(tmp_path: Path) -> None:
    name = "/data/lesion_\udcff.jpg"  # os.fsdecode(b"/data/lesion_\xff.jpg")
    path = write_csv(pd.DataFrame({"path": [name]}), tmp_path / "t.csv")
    assert path.read_bytes() == b"path\n/data/lesion_\xff.jpg\n"
    assert pd.read_csv(path, encoding_errors=NAME_ERRORS)["path"].tolist() == [name]
    assert printable(name) == "/data/lesion_\\xff.jpg"
    assert write_text(tmp_path / "t.txt", name).read_bytes() == b"/data/lesion_\xff.jpg"
