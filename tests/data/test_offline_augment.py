"""Offline augmentation: training rows only, exact top-up per class, reproducible output."""

from __future__ import annotations

from collections import Counter
from functools import partial
from pathlib import Path

import pandas as pd
import pytest

from melanoscan.data.augment import augment, build_train_transform
from melanoscan.data.cache import ResizedImageLoader
from melanoscan.data.images import load_rgb, pixel_hash
from melanoscan.data.manifest import MANIFEST_COLUMNS, make_table
from melanoscan.data.offline_augment import OFFLINE_SOURCE, generate_offline_augmentations
from melanoscan.preprocess import Preprocessing
from melanoscan.training.config import AugmentationConfig
from tests.conftest import ImageWriter

PREP = Preprocessing(image_size=16)
COUNTS = {"melanoma": 2, "nevus": 6, "dermatofibroma": 5}


@pytest.fixture
def train(tmp_path: Path, write_image: ImageWriter) -> pd.DataFrame:
    rows = []
    seed = 0
    for label, count in COUNTS.items():
        for k in range(count):
            seed += 1
            path = write_image(tmp_path / "data" / label / f"{label}{k}.jpg", seed=seed)
            rows.append({
                "path": str(path),
                "label": label,
                "source": "folder",
                "split": "train",
                "group_id": f"lesion{seed}",
                "image_id": f"ISIC_{seed:07d}",
                "content_hash": pixel_hash(load_rgb(path)),
            })
    table = make_table(rows)
    table["leak_group"] = [f"g{i}" for i in range(len(table))]
    return table


def _generate(
    train: pd.DataFrame, out_dir: Path, per_class: int = 5, seed: int = 0
) -> tuple[pd.DataFrame, list]:
    transform = partial(augment, build_train_transform(AugmentationConfig(), 16, seed=seed))
    return generate_offline_augmentations(
        train,
        out_dir,
        per_class=per_class,
        transform=transform,
        loader=ResizedImageLoader(PREP, "none"),
        seed=seed,
    )


def test_minority_classes_are_topped_up_exactly(train: pd.DataFrame, tmp_path: Path) -> None:
    new, skipped = _generate(train, tmp_path / "aug", per_class=5)
    assert skipped == []
    assert Counter(new["label"]) == {"melanoma": 3}  # nevus (6) and dermatofibroma (5) untouched
    assert list(new.columns) == [*train.columns, "augmented_from"]
    originals = train.set_index("path")
    for row in new.itertuples():
        path = Path(row.path)
        assert path.parent == tmp_path / "aug" / "melanoma"
        assert path.name.startswith("melanoma") and path.suffix == ".png"
        image = load_rgb(path)
        assert image.size == (16, 16)
        assert row.content_hash == pixel_hash(image)
        source = originals.loc[row.augmented_from]
        assert source["label"] == "melanoma"
        assert (row.group_id, row.leak_group) == (source["group_id"], source["leak_group"])
        assert (row.source, row.split, row.image_id) == (OFFLINE_SOURCE, "train", None)
    # Two originals, three copies: round-robin uses one twice, the other once.
    assert sorted(Counter(new["augmented_from"]).values()) == [1, 2]
    assert sorted(Path(p).name.split("_aug")[1] for p in new["path"]) == ["0.png", "0.png", "1.png"]


def test_nothing_to_do_returns_an_empty_table(train: pd.DataFrame, tmp_path: Path) -> None:
    new, skipped = _generate(train, tmp_path / "aug", per_class=2)
    assert len(new) == 0
    assert list(new.columns) == [*train.columns, "augmented_from"]
    assert skipped == []
    assert not (tmp_path / "aug").exists()


def test_rows_outside_the_training_split_are_refused(
    train: pd.DataFrame, tmp_path: Path
) -> None:
    train.loc[0, "split"] = "val"
    with pytest.raises(ValueError, match=r"training rows only.*\['val'\]"):
        _generate(train, tmp_path / "aug")


def test_same_seed_same_output(train: pd.DataFrame, tmp_path: Path) -> None:
    first, _ = _generate(train, tmp_path / "one", per_class=7, seed=3)
    again, _ = _generate(train, tmp_path / "two", per_class=7, seed=3)
    assert len(first) == 5 + 1 + 2
    assert first["augmented_from"].tolist() == again["augmented_from"].tolist()
    assert first["content_hash"].tolist() == again["content_hash"].tolist()
    names = [Path(p).relative_to(tmp_path / "one") for p in first["path"]]
    assert names == [Path(p).relative_to(tmp_path / "two") for p in again["path"]]


def test_unreadable_originals_are_skipped(train: pd.DataFrame, tmp_path: Path) -> None:
    missing = train.loc[train["label"] == "dermatofibroma", "path"].iloc[0]
    Path(missing).unlink()
    new, skipped = _generate(train, tmp_path / "aug", per_class=10)  # every original is used
    assert [(s.path, s.source, s.reason) for s in skipped] == [
        (missing, "folder", "file not found")
    ]
    # The class is still topped up, from its four readable originals.
    assert Counter(new["label"]) == {"melanoma": 8, "nevus": 4, "dermatofibroma": 5}
    assert missing not in set(new["augmented_from"])


def test_equal_file_names_in_different_folders_do_not_collide(
    tmp_path: Path, write_image: ImageWriter
) -> None:
    rows = [
        {"path": str(write_image(tmp_path / f"src{i}" / "ISIC_1.png", seed=i)),
         "label": "melanoma", "split": "train"}
        for i in range(2)
    ]
    new, _ = _generate(make_table(rows), tmp_path / "aug", per_class=4)
    assert len(set(new["path"])) == 2
    assert all(Path(p).is_file() for p in new["path"])
    assert set(new.columns) == {*MANIFEST_COLUMNS, "augmented_from"}


def test_scan_columns_describe_the_new_file(train: pd.DataFrame, tmp_path: Path) -> None:
    train["width"], train["height"], train["format"], train["phash"] = 32, 32, "JPEG", "0" * 16
    new, _ = _generate(train, tmp_path / "aug", per_class=3)
    row = new.iloc[0]
    assert (row["width"], row["height"], row["format"]) == (16, 16, "PNG")
    assert row["phash"] != "0" * 16
