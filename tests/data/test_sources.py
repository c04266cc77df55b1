from pathlib import Path

import pandas as pd
import pytest

from melanoscan.data.sources import DataSourceError, read_source, read_sources
from tests.conftest import ImageWriter


def test_class_folders_match_names_case_and_space_insensitively(
    tmp_path: Path, write_image: ImageWriter
) -> None:
    write_image(tmp_path / "data" / "Melanoma" / "ISIC_0000001.jpg", seed=1)
    write_image(tmp_path / "data" / "basal cell carcinoma" / "b.png", seed=2)
    write_image(tmp_path / "data" / "Vascular-Lesion" / "nested" / "c.bmp", seed=3)
    (tmp_path / "data" / "Melanoma" / "notes.txt").write_text("not an image")
    manifest = read_source(tmp_path / "data")
    table = manifest.images.sort_values("label")
    assert table["label"].tolist() == ["basal_cell_carcinoma", "melanoma", "vascular_lesion"]
    assert table["source_label"].tolist() == ["basal cell carcinoma", "Melanoma", "Vascular-Lesion"]
    assert set(table["taxonomy"]) == {"isic9"}
    assert table["image_id"].tolist()[1] == "ISIC_0000001"
    assert table["split"].isna().all()
    assert [(Path(s.path).name, s.reason) for s in manifest.skipped] == [
        ("notes.txt", "not an image file (suffix '.txt')")
    ]


def test_split_tree(tmp_path: Path, write_image: ImageWriter) -> None:
    for split in ("Train", "Test"):
        write_image(tmp_path / split / "nevus" / "a.jpg", seed=1)
        write_image(tmp_path / split / "melanoma" / "b.jpg", seed=2)
    table = read_source(tmp_path).images
    assert sorted(table["split"].unique()) == ["test", "train"]
    assert len(table) == 4
    assert set(table["source"]) == {str(tmp_path)}


def test_isic_onehot_csv(tmp_path: Path, write_image: ImageWriter) -> None:
    write_image(tmp_path / "images" / "ISIC_0034524.jpg", seed=1)
    write_image(tmp_path / "images" / "ISIC_0034525.jpg", seed=2)
    (tmp_path / "ISIC2018_Task3_Test_GroundTruth.csv").write_text(
        "image,MEL,NV,BCC,AKIEC,BKL,DF,VASC\n"
        "ISIC_0034524,1.0,0.0,0.0,0.0,0.0,0.0,0.0\n"
        "ISIC_0034525,0.0,0.0,0.0,0.0,1.0,0.0,0.0\n"
        "ISIC_0034526,0.0,1.0,0.0,0.0,0.0,0.0,0.0\n"
        "ISIC_0034527,0.0,1.0,1.0,0.0,0.0,0.0,0.0\n"
    )
    manifest = read_source(tmp_path)  # the folder holds exactly one label CSV
    table = manifest.images
    assert table["label"].tolist() == ["melanoma", "pigmented_benign_keratosis"]
    assert table["source_label"].tolist() == ["mel", "bkl"]
    assert set(table["taxonomy"]) == {"isic2018"} and set(table["split"]) == {"test"}
    assert sorted(s.reason for s in manifest.skipped) == [
        "image listed in CSV not found",
        "one-hot row has 2 positive classes",
    ]


def test_ham_metadata_groups_by_lesion(tmp_path: Path, write_image: ImageWriter) -> None:
    for index in range(3):
        write_image(tmp_path / "HAM10000_images" / f"ISIC_002741{index}.jpg", seed=index)
    csv = tmp_path / "HAM10000_metadata.csv"
    csv.write_text(
        "lesion_id,image_id,dx,dx_type,age,sex,localization\n"
        "HAM_0000118,ISIC_0027410,bkl,histo,80.0,male,scalp\n"
        "HAM_0000118,ISIC_0027411,bkl,histo,80.0,male,scalp\n"
        "HAM_0002730,ISIC_0027412,akiec,histo,70.0,female,face\n"
        "HAM_0002731,ISIC_0027413,xyz,histo,70.0,female,face\n"
    )
    manifest = read_source(csv)
    table = manifest.images
    assert table["group_id"].tolist() == ["HAM_0000118", "HAM_0000118", "HAM_0002730"]
    assert table["label"].tolist() == [
        "pigmented_benign_keratosis",
        "pigmented_benign_keratosis",
        "actinic_keratosis",
    ]
    assert table["source_label"].tolist()[2] == "akiec"
    assert [s.reason for s in manifest.skipped] == ["unknown dx code 'xyz'"]


def test_several_sources_at_once(tmp_path: Path, write_image: ImageWriter) -> None:
    write_image(tmp_path / "a" / "nevus" / "1.jpg", seed=1)
    write_image(tmp_path / "b" / "melanoma" / "2.jpg", seed=2)
    table = read_sources([tmp_path / "a", tmp_path / "b"]).images
    assert sorted(table["label"]) == ["melanoma", "nevus"]
    assert table["source"].nunique() == 2


@pytest.mark.parametrize(
    ("layout", "message"),
    [
        ({}, "data source not found"),
        ({"nevus/": None}, "contains no images"),
        ({"nevus/a.jpg": 1, "holiday photos/b.jpg": 2}, "'holiday photos' are not known classes"),
        ({"stuff/a.jpg": 1}, "cannot read"),
        ({"labels.csv": "id,class\nx,mel\n"}, "unknown CSV columns"),
        ({"readme.txt": "hello"}, "cannot read"),
        ({"Train/nevus/a.jpg": 1, "extra/b.jpg": 2}, "unexpected folder"),
    ],
)
def test_unreadable_sources_are_clear_errors(
    tmp_path: Path, write_image: ImageWriter, layout: dict[str, object], message: str
) -> None:
    root = tmp_path / "data"
    for name, content in layout.items():
        target = root / name
        if name.endswith("/"):
            target.mkdir(parents=True)
        elif isinstance(content, int):
            write_image(target, seed=content)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(str(content))
    source = root / "labels.csv" if "labels.csv" in layout else root
    with pytest.raises(DataSourceError, match=message):
        read_source(source)


def test_no_sources_and_csv_file_that_is_not_csv(tmp_path: Path) -> None:
    with pytest.raises(DataSourceError, match="no data source"):
        read_sources([])
    (tmp_path / "x.jpg").write_bytes(b"")
    with pytest.raises(DataSourceError, match="not a CSV"):
        read_source(tmp_path / "x.jpg")


def test_examples_folder_is_a_valid_source() -> None:
    from tests.conftest import EXAMPLES

    table = read_source(EXAMPLES).images
    assert len(table) == 18
    assert table["label"].value_counts().tolist() == [2] * 9


def test_manifest_csv_round_trips(tmp_path: Path, write_image: ImageWriter) -> None:
    for i, label in enumerate(["nevus", "melanoma"]):
        write_image(tmp_path / "imgs" / f"{label}.png", seed=i)
    table = pd.DataFrame({
        "path": ["imgs/nevus.png", "imgs/melanoma.png"], "label": ["nevus", "melanoma"],
        "source_label": ["nv", "MEL"], "taxonomy": ["isic2018", "isic9"], "source": "s",
        "split": ["train", "val"], "group_id": ["L1", None], "image_id": None,
        "content_hash": None, "leak_group": [0, 1],
    })
    table.to_csv(tmp_path / "split.csv", index=False)
    manifest = read_source(tmp_path / "split.csv")
    assert manifest.images["split"].tolist() == ["train", "val"]
    assert manifest.images["group_id"].tolist()[0] == "L1"
    assert manifest.images["path"].tolist() == [str(tmp_path / "imgs" / "nevus.png"),
                                                str(tmp_path / "imgs" / "melanoma.png")]
    table.assign(label=["nevus", "mole"]).to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(DataSourceError, match="unknown labels"):
        read_source(tmp_path / "bad.csv")
