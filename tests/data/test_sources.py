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


def _write_images(root: Path, write_image: ImageWriter, *ids: str) -> None:
    for seed, image_id in enumerate(ids):
        write_image(root / f"{image_id}.jpg", seed=seed + 40)


@pytest.mark.parametrize(
    ("header", "benign", "malignant"),
    [
        ("", "benign", "malignant"),
        ("image_id,benign_malignant\n", "benign", "malignant"),
        ("", "0.0", "1.0"),
        ("image,melanoma\n", "0", "1"),
    ],
)
def test_isic2016_ground_truth(
    tmp_path: Path, write_image: ImageWriter, header: str, benign: str, malignant: str
) -> None:
    _write_images(tmp_path / "ISBI2016_ISIC_Part3_Training_Data", write_image,
                  "ISIC_0000000", "ISIC_0000002", "ISIC_0000004")
    (tmp_path / "ISBI2016_ISIC_Part3_Training_GroundTruth.csv").write_text(
        f"{header}ISIC_0000000,{benign}\nISIC_0000002,{malignant}\n"
        f"ISIC_0000004,{malignant}\nISIC_0000009,{malignant}\n"
    )
    manifest = read_source(tmp_path)
    table = manifest.images
    assert table["image_id"].tolist() == ["ISIC_0000002", "ISIC_0000004"]
    assert set(table["label"]) == {"melanoma"} and set(table["taxonomy"]) == {"isic2016"}
    assert set(table["source_label"]) == {malignant} and table["split"].isna().all()
    first = 2 if header else 1  # skipped rows name their line
    assert [(s.path.rsplit(":", 1)[1], s.reason) for s in manifest.skipped] == [
        (f"{first} (ISIC_0000000)", "ISIC 2016 benign: no diagnosis among the 9 classes"),
        (f"{first + 3} (ISIC_0000009)", "image listed in CSV not found"),
    ]


def test_isic2016_test_file_is_a_test_split(tmp_path: Path, write_image: ImageWriter) -> None:
    _write_images(tmp_path, write_image, "ISIC_0000003")
    csv = tmp_path / "ISBI2016_ISIC_Part3_Test_GroundTruth.csv"
    # A stray value does not hide the format: its row is skipped with the reason.
    csv.write_text("ISIC_0000003,1.0\nISIC_0000005,maybe\nISIC_0000006,0.0\n")
    manifest = read_source(csv)
    assert manifest.images["split"].tolist() == ["test"]
    assert [s.reason for s in manifest.skipped] == [
        "ISIC 2016 value 'maybe' is neither benign nor malignant (0/1)",
        "ISIC 2016 benign: no diagnosis among the 9 classes",
    ]


def test_isic2017_training_and_validation_are_read_together(
    tmp_path: Path, write_image: ImageWriter
) -> None:
    _write_images(tmp_path / "ISIC-2017_Training_Data", write_image,
                  "ISIC_0000000", "ISIC_0000001", "ISIC_0000002")
    _write_images(tmp_path / "ISIC-2017_Validation_Data", write_image, "ISIC_0001769")
    (tmp_path / "ISIC-2017_Training_Part3_GroundTruth.csv").write_text(
        "image_id,melanoma,seborrheic_keratosis\n"
        "ISIC_0000000,0.0,0.0\nISIC_0000001,1.0,0.0\nISIC_0000002,0.0,1.0\n"
        "ISIC_0000003,1.0,1.0\n"
    )
    (tmp_path / "ISIC-2017_Validation_Part3_GroundTruth.csv").write_text(
        "image_id,melanoma,seborrheic_keratosis\nISIC_0001769,1,0\n"
    )
    manifest = read_source(tmp_path)
    table = manifest.images
    assert table["label"].tolist() == ["nevus", "melanoma", "seborrheic_keratosis", "melanoma"]
    assert table["source_label"].tolist()[0] == "neither (nevus)"
    assert set(table["taxonomy"]) == {"isic2017"} and set(table["source"]) == {str(tmp_path)}
    # The 148-image validation set is a training candidate like the rest: no split of its own.
    assert table["split"].isna().all()
    assert [s.reason for s in manifest.skipped] == [
        "row says both melanoma and seborrheic keratosis"
    ]


def test_isic2019_ground_truth_is_not_read_as_2018(
    tmp_path: Path, write_image: ImageWriter
) -> None:
    ids = ["ISIC_0000000", "ISIC_0000001_downsampled", "ISIC_0024306", "ISIC_0025000",
           "ISIC_0026000", "ISIC_0027000"]
    _write_images(tmp_path / "ISIC_2019_Training_Input", write_image, *ids)
    rows = {  # one-hot position in MEL,NV,BCC,AK,BKL,DF,VASC,SCC,UNK
        "ISIC_0000000": 0, "ISIC_0000001_downsampled": 1, "ISIC_0024306": 3,
        "ISIC_0025000": 4, "ISIC_0026000": 7, "ISIC_0027000": 8,
    }
    lines = ["image,MEL,NV,BCC,AK,BKL,DF,VASC,SCC,UNK"]
    for image_id, hot in rows.items():
        lines.append(",".join([image_id, *("1.0" if i == hot else "0.0" for i in range(9))]))
    (tmp_path / "ISIC_2019_Training_GroundTruth.csv").write_text("\n".join(lines) + "\n")
    manifest = read_source(tmp_path)
    table = manifest.images
    assert table["label"].tolist() == [
        "melanoma", "nevus", "actinic_keratosis", "pigmented_benign_keratosis",
        "squamous_cell_carcinoma",
    ]
    assert table["source_label"].tolist() == ["mel", "nv", "ak", "bkl", "scc"]
    assert set(table["taxonomy"]) == {"isic2019"}
    assert table["image_id"].tolist()[1] == "ISIC_0000001"  # the id, without "_downsampled"
    assert [s.reason for s in manifest.skipped] == [
        "ISIC 2019 UNK (none of the other diagnoses): not among the 9 classes"
    ]


def test_isic2020_ground_truth(tmp_path: Path, write_image: ImageWriter) -> None:
    diagnoses = {
        "ISIC_2637011": ("IP_1", "unknown", "benign", 0),
        "ISIC_0015719": ("IP_1", "nevus", "benign", 0),
        "ISIC_0052212": ("IP_1", "melanoma", "malignant", 1),
        "ISIC_0068279": ("IP_2", "seborrheic keratosis", "benign", 0),
        "ISIC_0074268": ("IP_2", "lentigo NOS", "benign", 0),
        "ISIC_0074311": ("IP_3", "solar lentigo", "benign", 0),
        "ISIC_0074542": ("IP_3", "lichenoid keratosis", "benign", 0),
        "ISIC_0075663": ("IP_4", "cafe-au-lait macule", "benign", 0),
        "ISIC_0075914": ("IP_4", "atypical melanocytic proliferation", "benign", 0),
        "ISIC_0076262": ("IP_5", "nevus", "malignant", 1),
    }
    _write_images(tmp_path / "train", write_image, *diagnoses)
    lines = ["image_name,patient_id,sex,age_approx,anatom_site_general_challenge,diagnosis,"
             "benign_malignant,target"]
    lines += [f"{image},{patient},male,45.0,torso,{dx},{bm},{target}"
              for image, (patient, dx, bm, target) in diagnoses.items()]
    (tmp_path / "ISIC_2020_Training_GroundTruth.csv").write_text("\n".join(lines) + "\n")
    manifest = read_source(tmp_path)
    table = manifest.images
    assert table["label"].tolist() == [
        "nevus", "melanoma", "seborrheic_keratosis", "pigmented_benign_keratosis",
        "pigmented_benign_keratosis", "pigmented_benign_keratosis",
    ]
    assert table["source_label"].tolist()[3] == "lentigo NOS"
    assert table["group_id"].tolist() == ["IP_1", "IP_1", "IP_2", "IP_2", "IP_3", "IP_3"]
    assert set(table["taxonomy"]) == {"isic2020"}
    assert [s.reason for s in manifest.skipped] == [
        "ISIC 2020 diagnosis 'unknown': not among the 9 classes",
        "ISIC 2020 diagnosis 'cafe-au-lait macule': not among the 9 classes",
        "ISIC 2020 diagnosis 'atypical melanocytic proliferation': not among the 9 classes",
        "ISIC 2020 target 1 contradicts the diagnosis 'nevus'",
    ]


def test_two_ham_metadata_folders_merge_and_keep_lesions_together(
    tmp_path: Path, write_image: ImageWriter
) -> None:
    """Like shared/data ham10000 and ham10000_more: one collection split in two folders."""
    from melanoscan.data.manifest import scan
    from melanoscan.data.splits import train_val_split

    header = "lesion_id,image_id,dx,dx_type,age,sex,localization\n"
    first, more = tmp_path / "ham10000", tmp_path / "ham10000_more"
    first_rows, more_rows = [], []
    for lesion in range(24):
        dx = ("nv", "mel", "bkl")[lesion % 3]
        image_id = f"ISIC_00{24306 + 2 * lesion}"
        write_image(first / "HAM10000_images" / f"{image_id}.jpg", seed=1000 + 2 * lesion)
        first_rows.append(f"HAM_{lesion:07d},{image_id},{dx},histo,50.0,male,back\n")
        if lesion % 2 == 0:  # another photo of the same lesion, in the second folder
            other = f"ISIC_00{24307 + 2 * lesion}"
            write_image(more / "HAM10000_images" / f"{other}.jpg", seed=1001 + 2 * lesion)
            more_rows.append(f"HAM_{lesion:07d},{other},{dx},histo,50.0,male,back\n")
    write_image(more / "HAM10000_images" / "ISIC_0030000.jpg", seed=5)  # a lesion of its own
    more_rows.append("HAM_0099999,ISIC_0030000,df,histo,60.0,female,leg\n")
    (first / "HAM10000_metadata.csv").write_text(header + "".join(first_rows))
    (more / "HAM10000_metadata.csv").write_text(header + "".join(more_rows))

    manifest = scan(read_sources([first, more]), show_progress=False)
    table = manifest.images
    assert len(table) == 24 + 12 + 1 and not manifest.skipped
    assert set(table["source"]) == {str(first), str(more)}
    assert set(table["taxonomy"]) == {"isic2018"}
    linked = table.groupby("group_id")["source"].nunique()
    assert (linked == 2).sum() == 12
    for seed in range(5):
        result = train_val_split(table, val_fraction=0.25, seed=seed)
        assert result.excluded.empty and len(result.table) == len(table)
        sides = result.table.groupby("group_id")["split"].nunique()
        assert (sides == 1).all()
        assert set(result.table["split"]) == {"train", "val"}
