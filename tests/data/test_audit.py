"""Integration: audit a small tree with planted problems and find exactly those."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from melanoscan import taxonomy
from melanoscan.data.audit import audit
from melanoscan.data.audit_report import (
    SAMPLES_PER_CLASS,
    class_distribution_figure,
    samples_figure,
    write_report,
)
from melanoscan.data.manifest import scan
from melanoscan.data.sources import read_source, read_sources
from tests.conftest import ImageWriter, assert_drawn_png, random_image


@pytest.fixture
def planted_tree(tmp_path: Path, write_image: ImageWriter) -> Path:
    root = tmp_path / "data"
    seed = iter(range(100, 200))
    for split, count in (("Train", 3), ("Test", 1)):
        for name in ("nevus", "melanoma", "basal cell carcinoma"):
            for index in range(count):
                write_image(root / split / name / f"{name[:3]}{index}.jpg", seed=next(seed))
    duplicate = random_image(1)
    write_image(root / "Train" / "nevus" / "dup_a.png", image=duplicate)
    write_image(root / "Train" / "nevus" / "dup_b.bmp", image=duplicate)
    conflict = random_image(2)
    write_image(root / "Train" / "melanoma" / "conflict.png", image=conflict)
    write_image(root / "Train" / "nevus" / "conflict.png", image=conflict)
    leaked = random_image(3)
    write_image(root / "Test" / "basal cell carcinoma" / "leak.png", image=leaked)
    write_image(root / "Train" / "basal cell carcinoma" / "leak_copy.png", image=leaked)
    near = random_image(4, (64, 64))
    brighter = np.clip(np.asarray(near).astype(int) + 6, 0, 255).astype(np.uint8)
    write_image(root / "Train" / "nevus" / "near_a.png", image=near)
    write_image(root / "Train" / "nevus" / "near_b.png", image=Image.fromarray(brighter))
    (root / "Train" / "melanoma" / "broken.jpg").write_text("not a jpeg")
    (root / "Train" / "melanoma" / "empty.png").write_bytes(b"")
    return root


def _names(groups: list) -> list[list[str]]:
    return sorted(sorted(Path(e["path"]).name for e in g.entries) for g in groups)


def test_audit_finds_exactly_the_planted_problems(planted_tree: Path) -> None:
    manifest = scan(read_source(planted_tree), show_progress=False)
    report = audit(manifest)
    assert _names(report.exact_duplicates) == [
        ["conflict.png", "conflict.png"],
        ["dup_a.png", "dup_b.bmp"],
        ["leak.png", "leak_copy.png"],
    ]
    assert _names(report.near_duplicates) == [["near_a.png", "near_b.png"]]
    assert report.near_duplicates[0].max_distance is not None
    assert _names(report.cross_split) == [["leak.png", "leak_copy.png"]]
    assert report.cross_split[0].splits == ["test", "train"]
    assert _names(report.label_conflicts) == [["conflict.png", "conflict.png"]]
    assert report.label_conflicts[0].labels == ["melanoma", "nevus"]
    assert sorted((Path(s["path"]).name, s["reason"]) for s in report.skipped) == [
        ("broken.jpg", "not an image (unrecognised content)"),
        ("empty.png", "empty file (0 bytes)"),
    ]
    assert report.counts["train"]["nevus"] == 3 + 2 + 1 + 2
    assert report.counts["test"]["basal_cell_carcinoma"] == 2
    assert report.counts["all"]["dermatofibroma"] == 0
    assert report.class_balance["missing_classes"] == [
        "actinic_keratosis",
        "dermatofibroma",
        "pigmented_benign_keratosis",
        "seborrheic_keratosis",
        "squamous_cell_carcinoma",
        "vascular_lesion",
    ]
    assert report.summary["images"] == len(manifest) == 20
    assert report.image_stats["formats"] == {"JPEG": 12, "PNG": 7, "BMP": 1}


def test_report_files_and_json_round_trip(planted_tree: Path, tmp_path: Path) -> None:
    manifest = scan(read_source(planted_tree), show_progress=False)
    report = audit(manifest)
    files = write_report(report, manifest.images, tmp_path / "out")
    assert sorted(f.name for f in files) == [
        "class_distribution.png",
        "report.html",
        "report.json",
        "samples.png",
    ]
    assert json.loads((tmp_path / "out" / "report.json").read_text()) == json.loads(
        json.dumps(report.to_dict())
    )
    assert_drawn_png(tmp_path / "out" / "class_distribution.png", size=(990, 495))
    assert_drawn_png(tmp_path / "out" / "samples.png", size=(780, 1215))
    page = (tmp_path / "out" / "report.html").read_text()
    assert "leak_copy.png" in page and "empty file (0 bytes)" in page


def test_class_distribution_draws_the_counts(planted_tree: Path) -> None:
    report = audit(scan(read_source(planted_tree), show_progress=False))
    (ax,) = class_distribution_figure(report).axes
    assert ax.get_title() == "Class distribution" and ax.get_xlabel() == "images"
    bottom_up = list(reversed(taxonomy.CLASSES))
    assert [t.get_text() for t in ax.get_yticklabels()] == [
        taxonomy.DISPLAY_NAMES[name] for name in bottom_up]
    splits = [t.get_text() for t in ax.get_legend().get_texts()]
    assert sorted(splits) == ["test", "train"]
    first, second = ax.containers  # stacked: the second split starts where the first ends
    for split, bars in zip(splits, (first, second), strict=True):
        assert [bar.get_width() for bar in bars] == [report.counts[split][c] for c in bottom_up]
    assert [bar.get_x() for bar in second] == [bar.get_width() for bar in first]
    by_class = dict(zip(bottom_up, (t.get_text().strip() for t in ax.texts), strict=True))
    assert by_class["nevus"] == "9" and by_class["dermatofibroma"] == "0"
    assert by_class["melanoma"] == str(report.counts["all"]["melanoma"])


def test_samples_show_up_to_six_readable_images_per_class(planted_tree: Path) -> None:
    table = scan(read_source(planted_tree), show_progress=False).images
    fig = samples_figure(table)
    assert fig.get_suptitle() == "Samples per class"
    rows = np.array(fig.axes).reshape(len(taxonomy.CLASSES), SAMPLES_PER_CLASS)
    shown = {name: sum(len(ax.images) for ax in row)
             for name, row in zip(taxonomy.CLASSES, rows, strict=True)}
    counts = table["label"].value_counts()
    assert shown == {name: min(SAMPLES_PER_CLASS, int(counts.get(name, 0)))
                     for name in taxonomy.CLASSES}
    assert shown["nevus"] == 6 and shown["dermatofibroma"] == 0
    assert rows[0, 0].get_ylabel() == taxonomy.DISPLAY_NAMES[taxonomy.CLASSES[0]]
    thumbnail = rows[list(taxonomy.CLASSES).index("nevus"), 0].images[0].get_array()
    assert max(thumbnail.shape[:2]) <= 128 and thumbnail.std() > 0  # a real, shrunk image


def test_compatible_taxonomies_are_not_conflicts(tmp_path: Path, write_image: ImageWriter) -> None:
    """HAM10000 'akiec' and an isic9 'squamous cell carcinoma' folder agree (Bowen's disease)."""
    image = random_image(9)
    write_image(tmp_path / "isic9" / "squamous cell carcinoma" / "ISIC_0024310.jpg", image=image)
    write_image(tmp_path / "isic9" / "nevus" / "ISIC_0024311.jpg", seed=10)
    write_image(tmp_path / "ham" / "images" / "ISIC_0024310.jpg", image=image)
    write_image(tmp_path / "ham" / "images" / "ISIC_0024311.jpg", seed=11)
    (tmp_path / "ham" / "meta.csv").write_text(
        "lesion_id,image_id,dx\nHAM_1,ISIC_0024310,akiec\nHAM_2,ISIC_0024311,mel\n"
    )
    report = audit(scan(read_sources([tmp_path / "isic9", tmp_path / "ham"]), show_progress=False))
    # ISIC_0024311: nevus in one source, mel in the other (different pixels, same ISIC id).
    assert [g.key for g in report.label_conflicts] == ["ISIC_0024311"]
    assert report.label_conflicts[0].by == ["image_id"]


def test_parallel_scan_keeps_order_and_reports_bad_files(
    tmp_path: Path, write_image: ImageWriter
) -> None:
    for index in range(70):
        write_image(tmp_path / "nevus" / f"{index:03d}.png", seed=index)
    (tmp_path / "nevus" / "050.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    manifest = scan(read_source(tmp_path), workers=2, show_progress=False)
    assert len(manifest) == 69
    assert [Path(s.path).name for s in manifest.skipped] == ["050.png"]
    names = [Path(p).name for p in manifest.images["path"]]
    assert names == sorted(names)
    assert manifest.images["content_hash"].nunique() == 69


@pytest.fixture
def several_sources(tmp_path: Path, write_image: ImageWriter) -> list[Path]:
    """isic9-, ISIC 2017- and HAM-like sources sharing images, lesions and disagreements."""
    isic9, isic2017 = tmp_path / "a_isic9", tmp_path / "b_isic2017"
    ham, ham_more = tmp_path / "c_ham", tmp_path / "d_ham_more"
    copied, scc = random_image(21), random_image(24)
    write_image(isic9 / "Train" / "melanoma" / "ISIC_0000001.jpg", image=copied)
    write_image(isic9 / "Train" / "seborrheic keratosis" / "ISIC_0000001.jpg", image=copied)
    write_image(isic9 / "Train" / "nevus" / "ISIC_0000002.jpg", seed=22)
    write_image(isic9 / "Test" / "nevus" / "ISIC_0000003.jpg", seed=23)
    write_image(isic9 / "Train" / "actinic keratosis" / "ISIC_0024310.jpg", image=scc)
    write_image(isic9 / "Test" / "basal cell carcinoma" / "other.jpg", seed=25)
    # ISIC 2017 holds the first three again, resized (other pixels, same ISIC ids).
    for seed, image_id in ((21, "ISIC_0000001"), (22, "ISIC_0000002"), (23, "ISIC_0000003"),
                           (26, "ISIC_0000009")):
        write_image(isic2017 / "images" / f"{image_id}.jpg", seed=seed, size=(48, 48))
    (isic2017 / "ISIC-2017_Training_Part3_GroundTruth.csv").write_text(
        "image_id,melanoma,seborrheic_keratosis\n"
        "ISIC_0000001,1.0,0.0\nISIC_0000002,0.0,0.0\nISIC_0000003,0.0,1.0\nISIC_0000009,0,0\n"
    )
    write_image(ham / "images" / "ISIC_0024310.jpg", image=scc)  # same pixels as isic9's
    write_image(ham / "images" / "ISIC_0024311.jpg", seed=27)
    write_image(ham_more / "images" / "ISIC_0024312.jpg", seed=28)  # same lesion, other photo
    header = "lesion_id,image_id,dx\n"
    (ham / "HAM10000_metadata.csv").write_text(
        header + "HAM_1,ISIC_0024310,akiec\nHAM_2,ISIC_0024311,nv\n"
    )
    (ham_more / "HAM10000_metadata.csv").write_text(header + "HAM_2,ISIC_0024312,nv\n")
    return [isic9, isic2017, ham, ham_more]


def test_audit_compares_sources_pairwise(several_sources: list[Path]) -> None:
    isic9, isic2017, ham, ham_more = map(str, several_sources)
    report = audit(scan(read_sources(several_sources), show_progress=False))
    pairs = {tuple(p.sources): p for p in report.source_pairs}
    assert len(pairs) == 6  # every pair of the 4 sources, sharing or not
    archive = pairs[(isic9, isic2017)]
    assert archive.shared_images == 3 and archive.shared_lesions == 0
    assert archive.shared_by_split == {"test": {"unsplit": 1}, "train": {"unsplit": 2}}
    # isic9 files ISIC_0000001 as melanoma and as seborrheic keratosis; 2017 says melanoma.
    assert archive.label_disagreements == 2
    assert archive.disagreeing_labels == {"nevus": {"seborrheic_keratosis": 1},
                                          "seborrheic_keratosis": {"melanoma": 1}}
    # HAM akiec agrees with isic9's actinic keratosis folder.
    assert (pairs[(isic9, ham)].shared_images, pairs[(isic9, ham)].label_disagreements) == (1, 0)
    assert (pairs[(ham, ham_more)].shared_images, pairs[(ham, ham_more)].shared_lesions) == (0, 1)
    assert pairs[(isic2017, ham)].shared_images == 0
    def ids(groups: list) -> list[str]:
        return sorted(g.entries[0]["image_id"] for g in groups)

    assert ids(report.cross_source) == [
        "ISIC_0000001", "ISIC_0000002", "ISIC_0000003", "ISIC_0024310"]
    assert {tuple(g.sources) for g in report.cross_source} == {(isic9, isic2017), (isic9, ham)}
    assert ids(report.cross_source_conflicts) == ["ISIC_0000001", "ISIC_0000003"]
    assert report.summary["cross_source_groups"] == 4
    assert report.summary["cross_source_conflict_groups"] == 2


def test_cross_source_section_is_rendered(several_sources: list[Path], tmp_path: Path) -> None:
    from rich.console import Console

    from melanoscan.data.audit_report import print_summary

    manifest = scan(read_sources(several_sources), show_progress=False)
    report = audit(manifest)
    console = Console(record=True, width=250)
    print_summary(report, console)
    text = console.export_text()
    assert "Images shared between sources: 4 images (9 files); 3 of 6 source pairs" in text
    assert "seborrheic_keratosis / melanoma: 1" in text
    assert "Label disagreements between sources: 2 groups" in text
    write_report(report, manifest.images, tmp_path / "out")
    saved = json.loads((tmp_path / "out" / "report.json").read_text())
    assert saved["schema_version"] == 2
    assert saved["source_pairs"][0]["sources"] == [str(several_sources[0]),
                                                   str(several_sources[1])]
    page = (tmp_path / "out" / "report.html").read_text()
    assert "Sources compared pairwise" in page and "Label disagreements between sources" in page
