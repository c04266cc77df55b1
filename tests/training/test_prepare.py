"""prepare_data: holdout sources stay out of training; what is left out is listed and counted."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from melanoscan.data.manifest import Skipped
from melanoscan.data.splits import EXCLUDED_CONFLICT, EXCLUDED_EVAL_OVERLAP
from melanoscan.preprocess import Preprocessing
from melanoscan.training import prepare
from melanoscan.training.prepare import EXCLUDED_FILE, SKIPPED_FILE, data_notes, prepare_data
from tests.conftest import random_image
from tests.training.conftest import make_class_folders, tiny_config

HEADER = "lesion_id,image_id,dx,dx_type,age,sex,localization\n"


def _ham_folder(root: Path, rows: list[tuple[str, str, str, int]]) -> Path:
    """A HAM10000-style folder: metadata plus ``images/<id>.png`` drawn from ``seed``."""
    for _, image_id, _, seed in rows:
        path = root / "images" / f"{image_id}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        random_image(seed, (40, 36)).save(path)
    (root / "HAM10000_metadata.csv").write_text(
        HEADER + "".join(f"{lesion},{image_id},{dx},histo,50,male,back\n"
                         for lesion, image_id, dx, _ in rows)
    )
    return root


def test_holdout_source_and_its_copies_are_never_trained_on(tmp_path: Path) -> None:
    folders = make_class_folders(tmp_path / "folders", per_class=8)
    # Three ways the other sources hold a held-out image: its pixels under another name, its
    # ISIC id (another copy of the file), another photo of its lesion.
    random_image(9001, (40, 36)).save(folders / "nevus" / "copy_of_held.png")
    random_image(9102, (40, 36)).save(folders / "melanoma" / "ISIC_0020002.png")
    ham = _ham_folder(tmp_path / "ham", [
        ("HAM_C", "ISIC_0020003", "bcc", 9003),
        *[(f"HAM_T{i}", f"ISIC_00201{i:02d}", ("nv", "mel")[i % 2], 9200 + i) for i in range(6)],
    ])
    held = _ham_folder(tmp_path / "held", [
        ("HAM_A", "ISIC_0020010", "nv", 9001),
        ("HAM_B", "ISIC_0020002", "mel", 9002),
        ("HAM_C", "ISIC_0020011", "bcc", 9011),
        ("HAM_D", "ISIC_0020012", "nv", 9012),
    ])
    config = tiny_config(**{"data.holdout_sources": [str(held)]})
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    prepared = prepare_data([folders, ham], config, Preprocessing(image_size=32), run_dir,
                            show_progress=False)
    table = prepared.table
    holdout = table[table["split"] == "holdout"]
    assert sorted(holdout["image_id"]) == ["ISIC_0020002", "ISIC_0020010", "ISIC_0020011",
                                           "ISIC_0020012"]
    assert set(holdout["source"]) == {str(held)}
    trainable = table[table["split"].isin(["train", "val"])]
    assert set(table["split"]) == {"train", "val", "holdout"}
    for key in ("content_hash", "image_id", "group_id"):
        assert not set(trainable[key].dropna()) & set(holdout[key].dropna()), key
    excluded = pd.read_csv(run_dir / EXCLUDED_FILE)
    names = {Path(p).name: r for p, r in zip(excluded["path"], excluded["reason"], strict=True)}
    assert names == {"copy_of_held.png": EXCLUDED_EVAL_OVERLAP,
                     "ISIC_0020002.png": EXCLUDED_EVAL_OVERLAP,
                     "ISIC_0020003.png": EXCLUDED_EVAL_OVERLAP}
    assert prepared.summary["holdout_sources"] == [str(held)]
    assert prepared.summary["counts"]["holdout"] == {"basal_cell_carcinoma": 1, "melanoma": 1,
                                                     "nevus": 2}


def test_without_holdout_the_same_images_are_trained_on(tmp_path: Path) -> None:
    folders = make_class_folders(tmp_path / "folders", per_class=8)
    held = _ham_folder(tmp_path / "held", [("HAM_A", "ISIC_0020010", "nv", 9001),
                                           ("HAM_B", "ISIC_0020011", "mel", 9002)])
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    prepared = prepare_data([folders, held], tiny_config(), Preprocessing(image_size=32),
                            run_dir, show_progress=False)
    assert set(prepared.table["split"]) == {"train", "val"}
    assert len(prepared.table) == 3 * 8 + 2


def test_notes_count_what_was_left_out_and_name_the_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folders = make_class_folders(tmp_path / "folders", per_class=8)
    (folders / "nevus" / "broken.png").write_bytes(b"not an image")
    # The same pixels as melanoma_0 under another class: a label conflict, both excluded.
    (folders / "nevus" / "conflict.png").write_bytes(
        (folders / "melanoma" / "melanoma_0.png").read_bytes())
    lost = Skipped("gone.png", str(folders), "file not found")  # an original lost before copying
    monkeypatch.setattr(prepare, "generate_offline_augmentations",
                        lambda table, *args, **kwargs: (table.iloc[:0], [lost]))
    config = tiny_config(**{"balance.strategy": "offline"})
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    prepared = prepare_data([folders], config, Preprocessing(image_size=32), run_dir,
                            show_progress=False)
    skipped = pd.read_csv(run_dir / SKIPPED_FILE)
    assert sorted(Path(p).name for p in skipped["path"]) == ["broken.png", "gone.png"]
    excluded = len(pd.read_csv(run_dir / EXCLUDED_FILE))
    assert excluded >= 2
    assert data_notes(run_dir, prepared.summary) == [
        f"2 file(s) skipped as unreadable or unusable: listed in {run_dir / SKIPPED_FILE}",
        f"{excluded} image(s) excluded ({excluded} {EXCLUDED_CONFLICT}): "
        f"listed in {run_dir / EXCLUDED_FILE}",
    ]
    (run_dir / EXCLUDED_FILE).unlink()  # only files that exist are mentioned
    assert len(data_notes(run_dir, prepared.summary)) == 1
