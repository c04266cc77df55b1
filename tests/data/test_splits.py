"""Property-based tests: no leakage group ever straddles two splits; class proportions hold."""

from __future__ import annotations

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from melanoscan.data.splits import (
    EXCLUDED_CONFLICT,
    EXCLUDED_COPY,
    EXCLUDED_EVAL_OVERLAP,
    RELABELLED_BY_AUTHORITY,
    CleaningPolicy,
    kfold_split,
    train_val_split,
)
from melanoscan.taxonomy import CLASSES

KEYS = ("group_id", "content_hash", "image_id")


@st.composite
def manifests(draw: st.DrawFn, grouped: bool = True) -> pd.DataFrame:
    """Random manifests; ``grouped=False`` gives independent images and no test split."""
    n = draw(st.integers(min_value=30, max_value=150))
    classes = draw(st.lists(st.sampled_from(CLASSES), min_size=2, max_size=5, unique=True))
    rows = []
    for index in range(n):
        label = draw(st.sampled_from(classes))
        # Copies and lesion groups drawn from small pools so that they collide often.
        lesion = draw(st.one_of(st.none(), st.integers(0, n // 3))) if grouped else None
        copy = draw(st.integers(0, n // 2)) if grouped and draw(st.booleans()) else index + 1000
        rows.append(
            {
                "path": f"/img/{index}.jpg",
                "label": label,
                "source_label": label,
                "taxonomy": "isic9",
                "source": "s",
                "split": "test" if grouped and draw(st.integers(0, 9)) == 0 else None,
                "group_id": None if lesion is None else f"L{lesion}",
                "image_id": None,
                "content_hash": f"h{copy}",
            }
        )
    return pd.DataFrame(rows)


def _assert_no_group_straddles(table: pd.DataFrame, column: str) -> None:
    for key in KEYS:
        sides = table.dropna(subset=[key]).groupby(key)[column].nunique()
        assert (sides <= 1).all(), f"a {key} group straddles {column} values"


SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.mark.slow
@SETTINGS
@given(table=manifests(), seed=st.integers(0, 2**16))
def test_train_val_split_never_leaks(table: pd.DataFrame, seed: int) -> None:
    try:
        result = train_val_split(table, val_fraction=0.25, seed=seed)
    except ValueError:
        return  # too few independent groups to split: refusing is the correct answer
    kept, excluded = result.table, result.excluded
    assert len(kept) + len(excluded) == len(table)
    assert set(kept["split"]) <= {"train", "val", "test"}
    _assert_no_group_straddles(kept, "split")
    # Nothing that shares an image or lesion with a test image is trained or validated on.
    test = kept[kept["split"] == "test"]
    trainable = kept[kept["split"] != "test"]
    for key in ("group_id", "content_hash"):
        assert not set(trainable[key].dropna()) & set(test[key].dropna())
    # Test images are never excluded, and every exclusion says why.
    assert (table["split"] == "test").sum() == len(test)
    assert set(excluded["reason"]) <= {EXCLUDED_CONFLICT, EXCLUDED_EVAL_OVERLAP, EXCLUDED_COPY}
    # One copy of each image is trained on.
    assert not trainable["content_hash"].duplicated().any()


@pytest.mark.slow
@SETTINGS
@given(table=manifests(), k=st.integers(2, 5), seed=st.integers(0, 2**16))
def test_kfold_never_leaks(table: pd.DataFrame, k: int, seed: int) -> None:
    try:
        result = kfold_split(table, k=k, seed=seed)
    except ValueError:
        return
    candidates = result.table[result.table["split"] != "test"]
    assert set(candidates["fold"]) <= set(range(k))
    assert (result.table.loc[result.table["split"] == "test", "fold"] == -1).all()
    _assert_no_group_straddles(candidates, "fold")


@pytest.mark.slow
@SETTINGS
@given(table=manifests(grouped=False), seed=st.integers(0, 2**16))
def test_class_proportions_hold_without_groups(table: pd.DataFrame, seed: int) -> None:
    result = train_val_split(table, val_fraction=0.25, seed=seed)
    candidates = result.table[result.table["split"] != "test"]
    for label, rows in candidates.groupby("label"):
        expected = len(rows) / 4
        in_val = int((rows["split"] == "val").sum())
        assert abs(in_val - expected) <= 1, (label, in_val, expected)


def test_cleaning_policy_is_explicit() -> None:
    table = pd.DataFrame(
        [
            # the same pixels filed as melanoma and nevus: a conflict
            ("a1", "melanoma", "train", None, "hA"),
            ("a2", "nevus", "train", None, "hA"),
            # the same pixels in train and test: an overlap
            ("b1", "nevus", "train", None, "hB"),
            ("b2", "nevus", "test", None, "hB"),
            # a lesion with one image in test and one in train
            ("c1", "melanoma", "train", "L1", "hC1"),
            ("c2", "melanoma", "test", "L1", "hC2"),
            *[
                (f"x{i}", "nevus" if i % 2 else "melanoma", "train", None, f"x{i}")
                for i in range(20)
            ],
        ],
        columns=["path", "label", "split", "group_id", "content_hash"],
    ).assign(taxonomy="isic9", image_id=None, source="s", source_label="-")
    result = train_val_split(table, val_fraction=0.25, seed=0)
    reasons = dict(zip(result.excluded["path"], result.excluded["reason"], strict=True))
    assert reasons == {
        "a1": EXCLUDED_CONFLICT,
        "a2": EXCLUDED_CONFLICT,
        "b1": EXCLUDED_EVAL_OVERLAP,
        "c1": EXCLUDED_EVAL_OVERLAP,
    }
    assert result.summary()["excluded"] == {EXCLUDED_CONFLICT: 2, EXCLUDED_EVAL_OVERLAP: 2}
    lenient = train_val_split(
        table,
        val_fraction=0.25,
        seed=0,
        policy=CleaningPolicy(exclude_label_conflicts=False, exclude_eval_overlap=False),
    )
    assert lenient.excluded.empty
    assert len(lenient.table) == len(table)


def test_one_copy_of_an_image_from_two_sources_is_trained_on() -> None:
    columns = ["path", "label", "taxonomy", "split", "image_id", "content_hash", "width"]
    table = pd.DataFrame(
        [
            # isic9 files this HAM akiec image as squamous cell carcinoma: the finer label wins
            ("isic9/scc/1.jpg", "squamous_cell_carcinoma", "isic9", None, "ISIC_1", "p1", 180),
            ("ham/1.jpg", "actinic_keratosis", "isic2018", None, "ISIC_1", "q1", 224),
            # three copies: the 9-class ones win, then the larger of those
            ("isic9/bcc/2.jpg", "basal_cell_carcinoma", "isic9", None, "ISIC_2", "p2", 180),
            ("ham/2.jpg", "basal_cell_carcinoma", "isic2018", None, "ISIC_2", "q2", 224),
            ("isic9/bcc/2b.jpg", "basal_cell_carcinoma", "isic9", None, None, "q2", 224),
            # copies in a test split are evaluation images, never deduplicated
            ("t/3.jpg", "nevus", "isic9", "test", "ISIC_3", "p3", 180),
            ("t/3b.jpg", "nevus", "isic9", "test", None, "p3", 180),
            *[(f"x{i}", "nevus" if i % 2 else "melanoma", "isic9", None, None, f"x{i}", 180)
              for i in range(20)],
        ],
        columns=columns,
    ).assign(height=lambda t: t["width"], group_id=None, source="s", source_label="-")
    result = train_val_split(table, val_fraction=0.25, seed=0)
    reasons = dict(zip(result.excluded["path"], result.excluded["reason"], strict=True))
    assert reasons == {"ham/1.jpg": EXCLUDED_COPY, "isic9/bcc/2.jpg": EXCLUDED_COPY,
                       "ham/2.jpg": EXCLUDED_COPY}
    assert {"isic9/scc/1.jpg", "isic9/bcc/2b.jpg", "t/3.jpg", "t/3b.jpg"} <= set(
        result.table["path"])
    everything = train_val_split(table, val_fraction=0.25, seed=0,
                                 policy=CleaningPolicy(drop_duplicate_copies=False))
    assert everything.excluded.empty


def test_source_val_split_is_kept() -> None:
    table = pd.DataFrame(
        {
            "path": [f"p{i}" for i in range(7)],
            "label": ["nevus", "melanoma"] * 3 + ["melanoma"],
            "split": ["train", "train", "val", "val", "test", None, "train"],
            "content_hash": [f"h{i}" for i in range(6)] + ["h3"],  # p6 is a copy of val p3
        }
    ).assign(taxonomy="isic9", image_id=None, group_id=None, source="s", source_label="-")
    result = train_val_split(table)
    assert result.table["split"].tolist() == ["train", "train", "val", "val", "test", "train"]
    assert result.excluded["path"].tolist() == ["p6"]
    assert result.excluded["reason"].tolist() == [EXCLUDED_EVAL_OVERLAP]


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.5])
def test_bad_fraction(fraction: float) -> None:
    with pytest.raises(ValueError, match="val_fraction"):
        train_val_split(pd.DataFrame(), val_fraction=fraction)


def test_too_few_groups_is_a_clear_error() -> None:
    table = pd.DataFrame(
        {"path": ["a", "b"], "label": ["nevus", "nevus"], "split": None, "content_hash": ["h", "h"]}
    ).assign(taxonomy="isic9", image_id=None, group_id=None, source="s", source_label="-")
    with pytest.raises(ValueError, match="independent image groups"):
        kfold_split(table, k=3)


@given(per_class=st.integers(1, 4), seed=st.integers(0, 100))
@SETTINGS
def test_tiny_datasets_still_split(per_class: int, seed: int) -> None:
    # Every class smaller than the number of folds: sklearn refuses, the fallback deals groups.
    labels = [name for name in CLASSES for _ in range(per_class)]
    table = pd.DataFrame(
        {"path": [f"p{i}" for i in range(len(labels))], "label": labels, "split": None,
         "content_hash": [f"h{i}" for i in range(len(labels))]}
    ).assign(taxonomy="isic9", image_id=None, group_id=None, source="s", source_label="-")
    table.loc[0, "content_hash"] = table.loc[len(labels) - 1, "content_hash"] = "shared"
    result = train_val_split(table, val_fraction=0.2, seed=seed,
                             policy=CleaningPolicy(exclude_label_conflicts=False))
    split = result.table["split"]
    assert set(split) == {"train", "val"}
    assert 0.05 * len(labels) <= (split == "val").sum() <= 0.45 * len(labels)
    _assert_no_group_straddles(result.table, "split")


def _authority_table() -> pd.DataFrame:
    columns = ["path", "label", "taxonomy", "split", "image_id", "content_hash"]
    rows = [
        # isic9 files an ISIC 2017 melanoma under seborrheic keratosis: 2017 is the authority
        ("isic9/sk/1.jpg", "seborrheic_keratosis", "isic9", None, "ISIC_1", "p1"),
        ("isic2017/1.jpg", "melanoma", "isic2017", None, "ISIC_1", "q1"),
        # a coarse authority (HAM akiec) and an exact one (ISIC 2019 SCC) that agree with it
        ("isic9/nv/2.jpg", "nevus", "isic9", None, "ISIC_2", "p2"),
        ("ham/2.jpg", "actinic_keratosis", "isic2018", None, "ISIC_2", "q2"),
        ("isic2019/2.jpg", "squamous_cell_carcinoma", "isic2019", None, "ISIC_2", "r2"),
        # an evaluation image is never relabelled, even against official ground truth
        ("isic9/Test/nv/3.jpg", "nevus", "isic9", "test", "ISIC_3", "p3"),
        ("ham/3.jpg", "actinic_keratosis", "isic2018", None, "ISIC_3", "q3"),
        # two official files that disagree: no authority, the conflict stands
        ("isic9/mel/4.jpg", "melanoma", "isic9", None, "ISIC_4", "p4"),
        ("isic2017/4.jpg", "nevus", "isic2017", None, "ISIC_4", "q4"),
        ("ham/4.jpg", "bcc", "isic2018", None, "ISIC_4", "r4"),
        # class folders alone (same pixels, two folders): nothing to defer to
        ("isic9/mel/5.jpg", "melanoma", "isic9", None, None, "p5"),
        ("isic9/nv/5.jpg", "nevus", "isic9", None, None, "p5"),
        *[(f"x{i}", "nevus" if i % 2 else "melanoma", "isic9", None, None, f"x{i}")
          for i in range(20)],
    ]
    table = pd.DataFrame(rows, columns=columns)
    table.loc[table["label"] == "bcc", "label"] = "basal_cell_carcinoma"
    return table.assign(group_id=None, source="s", source_label="-", width=100, height=100)


def test_conflicts_resolved_by_authority() -> None:
    table = _authority_table()
    policy = CleaningPolicy(resolve_conflicts_by_authority=True)
    result = train_val_split(table, val_fraction=0.25, seed=0, policy=policy)
    relabelled = result.relabelled.set_index("path")
    assert sorted(relabelled.index) == ["isic9/nv/2.jpg", "isic9/sk/1.jpg"]
    assert relabelled.loc["isic9/sk/1.jpg", ["old_label", "label"]].tolist() == [
        "seborrheic_keratosis", "melanoma"]
    # The exact official label wins over the coarse one it agrees with.
    assert relabelled.loc["isic9/nv/2.jpg", ["old_label", "label"]].tolist() == [
        "nevus", "squamous_cell_carcinoma"]
    assert set(relabelled["reason"]) == {RELABELLED_BY_AUTHORITY}
    labels = dict(zip(result.table["path"], result.table["label"], strict=True))
    reasons = dict(zip(result.excluded["path"], result.excluded["reason"], strict=True))
    # Relabelled copies are no longer conflicts: one copy of each image is trained on.
    assert {labels.get(p) or reasons[p] for p in ("isic9/sk/1.jpg", "isic2017/1.jpg")} == {
        "melanoma", EXCLUDED_COPY}
    assert "isic9/nv/2.jpg" in labels or "isic2019/2.jpg" in labels
    assert all(reasons.get(p) != EXCLUDED_CONFLICT for p in table["path"][:5])
    # The test image keeps its (wrong) label; its HAM copy is kept out of training.
    assert labels["isic9/Test/nv/3.jpg"] == "nevus"
    assert reasons["ham/3.jpg"] == EXCLUDED_CONFLICT
    # Disagreeing authorities and folder-only conflicts stay conflicts, excluded.
    for path in ("isic9/mel/4.jpg", "isic2017/4.jpg", "ham/4.jpg", "isic9/mel/5.jpg",
                 "isic9/nv/5.jpg"):
        assert reasons[path] == EXCLUDED_CONFLICT, path
    assert result.summary()["relabelled"] == 2


def test_authority_rule_is_off_by_default() -> None:
    result = train_val_split(_authority_table(), val_fraction=0.25, seed=0)
    assert result.relabelled.empty
    reasons = dict(zip(result.excluded["path"], result.excluded["reason"], strict=True))
    assert reasons["isic9/sk/1.jpg"] == reasons["isic2017/1.jpg"] == EXCLUDED_CONFLICT
