"""Leak-free splits: stratified train/validation and k-fold splits that keep groups together.

A *leakage group* is the set of images that must never be on two sides of a split: images of
the same lesion (``group_id``), exact copies (same decoded pixels), the same ISIC id, and, by
default, near duplicates (pHash). Before splitting, the :class:`CleaningPolicy` decides what is
excluded from training, and every exclusion is returned with its reason.
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold

from melanoscan import taxonomy
from melanoscan.data.duplicates import (
    NEAR_DUPLICATE_MAX_DISTANCE,
    SAME_IMAGE_COLUMNS,
    connected_components,
    identity_groups,
    near_duplicate_pairs,
    pairs_sharing_columns,
)

EXCLUDED_CONFLICT = "label conflict: the same image is filed under incompatible classes"
EXCLUDED_EVAL_OVERLAP = "shares its image or lesion with an evaluation image"
EXCLUDED_COPY = "another copy of the same image is kept (finer label, then larger file)"
RELABELLED_BY_AUTHORITY = (
    "relabelled: a class folder disagreed with the official ground truth of the same image"
)


@dataclass(frozen=True)
class CleaningPolicy:
    """What is kept out of training, explicitly.

    Args:
        exclude_label_conflicts: drop images whose copies carry incompatible labels.
        exclude_eval_overlap: drop training candidates that share content, ISIC id, lesion or
            (if ``group_near_duplicates``) a near duplicate with an evaluation image.
        eval_splits: source splits that are held out for evaluation and never trained on.
        group_near_duplicates: treat near duplicates as the same image when grouping.
        near_max_distance: pHash distance for near duplicates.
        drop_duplicate_copies: train on one copy of each image (same pixels or same ISIC id,
            e.g. an isic9 image that is also in HAM10000): the copy with the finest label (a
            9-class folder over a 7-code HAM label, which cannot tell squamous cell carcinoma
            from actinic keratosis), then the largest. Without it, such an image is counted
            twice and may be taught under two different classes.
        resolve_conflicts_by_authority: where copies of one image disagree and the official
            ground-truth files among them (challenge CSVs, HAM10000 metadata) agree with each
            other, give the class-folder copies the official label instead of excluding the
            image. Only training candidates are relabelled, and every one is listed
            (:attr:`SplitResult.relabelled`); evaluation images keep their label.
    """

    exclude_label_conflicts: bool = True
    exclude_eval_overlap: bool = True
    eval_splits: tuple[str, ...] = ("test",)
    group_near_duplicates: bool = True
    near_max_distance: int = NEAR_DUPLICATE_MAX_DISTANCE
    drop_duplicate_copies: bool = True
    resolve_conflicts_by_authority: bool = False


@dataclass
class SplitResult:
    """A manifest table with an assigned ``split`` (train / val / the eval splits) or ``fold``.

    Args:
        table: every kept image; ``split`` is ``"train"``, ``"val"`` or an eval split, and for
            k-fold splits ``fold`` is 0..k-1 for training candidates (-1 for eval images).
            ``leak_group`` identifies the leakage group.
        excluded: the images kept out of training, with a ``reason`` column.
        policy: the policy that was applied.
        relabelled: training candidates whose label the authority rule changed, with
            ``label`` (new), ``old_label`` and ``reason``.
    """

    table: pd.DataFrame
    excluded: pd.DataFrame
    policy: CleaningPolicy
    relabelled: pd.DataFrame = field(default_factory=pd.DataFrame)

    def summary(self) -> dict[str, Any]:
        return {
            "policy": asdict(self.policy),
            "counts": {
                str(split): {str(k): int(v) for k, v in rows["label"].value_counts().items()}
                for split, rows in self.table.groupby("split")
            },
            "excluded": {str(k): int(v) for k, v in self.excluded["reason"].value_counts().items()},
            "relabelled": len(self.relabelled),
        }


def leakage_groups(table: pd.DataFrame, policy: CleaningPolicy | None = None) -> np.ndarray:
    """Label each row with its leakage group (lesion, exact copy, ISIC id, near duplicate)."""
    policy = policy or CleaningPolicy()
    pairs = pairs_sharing_columns(table, ("group_id", *SAME_IMAGE_COLUMNS))
    if policy.group_near_duplicates and "phash" in table.columns:
        hashes = table["phash"].tolist()
        pairs += [(i, j) for i, j, _ in near_duplicate_pairs(hashes, policy.near_max_distance)]
    return connected_components(len(table), pairs)


def apply_policy(
    table: pd.DataFrame, policy: CleaningPolicy
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Return ``(kept, excluded, relabelled)``.

    ``kept`` has a ``leak_group`` column, ``excluded`` a ``reason``, ``relabelled`` the rows the
    authority rule relabelled (``old_label``, ``label``, ``reason``; empty unless it is on).
    """
    table = table.reset_index(drop=True).copy()
    table["leak_group"] = leakage_groups(table, policy)
    is_eval = table["split"].isin(policy.eval_splits).to_numpy()
    relabelled = pd.DataFrame()
    if policy.resolve_conflicts_by_authority:
        table, relabelled = _relabel_by_authority(table, ~is_eval)
    reason = pd.Series([None] * len(table), dtype="object")
    conflicted = _conflicted_rows(table)
    if policy.exclude_label_conflicts:
        reason[conflicted & ~is_eval] = EXCLUDED_CONFLICT
    if policy.exclude_eval_overlap:
        eval_groups = set(table.loc[is_eval, "leak_group"])
        overlap = table["leak_group"].isin(eval_groups).to_numpy() & ~is_eval
        reason[overlap & reason.isna().to_numpy()] = EXCLUDED_EVAL_OVERLAP
    if policy.drop_duplicate_copies:
        # Conflicting copies are the conflict rule's business: deduplicating them would pick
        # one of two incompatible labels.
        candidates = reason.isna().to_numpy() & ~is_eval & ~conflicted
        reason[_redundant_copies(table, candidates)] = EXCLUDED_COPY
    excluded = table[reason.notna().to_numpy()].assign(reason=reason.dropna().to_numpy())
    kept = table[reason.isna().to_numpy()].reset_index(drop=True)
    return kept, excluded.reset_index(drop=True), relabelled


def _relabel_by_authority(
    table: pd.DataFrame, may_relabel: np.ndarray
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Give class-folder copies the official label where the official copies agree."""
    official = table["taxonomy"].isin(taxonomy.CHALLENGE_TAXONOMIES).to_numpy()
    identity = identity_groups(table)
    changed: list[int] = []
    old_labels: list[str] = []
    for group in np.unique(identity[_conflicted_rows(table)]):
        rows = np.flatnonzero(identity == group)
        authority = [i for i in rows if official[i]]
        pairs = [(table.at[i, "label"], table.at[i, "taxonomy"]) for i in authority]
        if not authority or not taxonomy.labels_agree(pairs):
            continue  # no official label, or the official files disagree: left a conflict
        exact = [label for label, kind in pairs if taxonomy.is_exact(label, kind)]
        for i in rows:
            if official[i] or not may_relabel[i]:
                continue
            label = table.at[i, "label"]
            if any(taxonomy.labels_compatible(label, table.at[i, "taxonomy"], a, t)
                   for a, t in pairs):
                continue
            # The copy now says what the official file says, at the official file's resolution.
            new, new_taxonomy = next(((lb, k) for lb, k in pairs if lb in exact), pairs[0])
            changed.append(int(i))
            old_labels.append(str(label))
            table.at[i, "label"] = new
            table.at[i, "taxonomy"] = new_taxonomy
    relabelled = table.loc[changed].assign(old_label=old_labels, reason=RELABELLED_BY_AUTHORITY)
    return table, relabelled.reset_index(drop=True)


def _redundant_copies(table: pd.DataFrame, candidates: np.ndarray) -> np.ndarray:
    """Mask of candidate rows that are a second copy of another candidate's image."""
    rows = table[candidates]
    if rows.empty:
        return np.zeros(len(table), dtype=bool)
    ranked = rows.assign(
        _identity=identity_groups(rows),
        _coarse=(rows.get("taxonomy", pd.Series("", index=rows.index)) == taxonomy.ISIC2018),
        _pixels=-(rows.get("width", 0) * rows.get("height", 0)),
    ).sort_values(["_identity", "_coarse", "_pixels", "path"])
    redundant = ranked.index[ranked["_identity"].duplicated()]
    return table.index.isin(redundant)


def train_val_split(
    table: pd.DataFrame,
    *,
    val_fraction: float = 0.2,
    seed: int = 0,
    policy: CleaningPolicy | None = None,
) -> SplitResult:
    """Stratified, group-preserving train/validation split of the training candidates.

    Rows in ``policy.eval_splits`` keep their split. If a source already provides a ``val``
    split it is used as is and held out like a test split; otherwise about ``val_fraction`` of
    the candidates (whole leakage groups, class proportions kept) become ``val``.
    """
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be between 0 and 1, got {val_fraction}")
    policy = policy or CleaningPolicy()
    if (table["split"] == "val").any():
        # The source's own validation split is held out like a test split: nothing that
        # shares an image or lesion with it is trained on.
        held_out = replace(policy, eval_splits=(*policy.eval_splits, "val"))
        kept, excluded, relabelled = apply_policy(table, held_out)
        kept.loc[~kept["split"].isin(held_out.eval_splits), "split"] = "train"
        return SplitResult(kept, excluded, held_out, relabelled)
    kept, excluded, relabelled = apply_policy(table, policy)
    candidates = ~kept["split"].isin(policy.eval_splits)
    folds = _stratified_group_folds(kept[candidates], round(1 / val_fraction), seed)
    kept.loc[candidates, "split"] = np.where(folds == 0, "val", "train")
    return SplitResult(kept, excluded, policy, relabelled)


def kfold_split(
    table: pd.DataFrame, *, k: int = 5, seed: int = 0, policy: CleaningPolicy | None = None
) -> SplitResult:
    """Stratified, group-preserving k-fold assignment (``fold`` column) of training candidates."""
    if k < 2:
        raise ValueError(f"k-fold needs k >= 2, got {k}")
    policy = policy or CleaningPolicy()
    kept, excluded, relabelled = apply_policy(table, policy)
    candidates = ~kept["split"].isin(policy.eval_splits)
    kept["fold"] = -1
    kept.loc[candidates, "fold"] = _stratified_group_folds(kept[candidates], k, seed)
    kept.loc[candidates, "split"] = "train"
    return SplitResult(kept, excluded, policy, relabelled)


def _stratified_group_folds(rows: pd.DataFrame, k: int, seed: int) -> np.ndarray:
    """Fold number 0..k-1 per row; whole leakage groups per fold, class proportions kept."""
    k = max(2, k)
    if rows.empty:
        raise ValueError("no training candidates left to split (after the cleaning policy)")
    if rows["leak_group"].nunique() < k:
        raise ValueError(
            f"cannot make {k} folds from {rows['leak_group'].nunique()} independent image groups"
        )
    if rows["label"].value_counts().max() < k:
        # sklearn refuses when every class is smaller than k (tiny datasets): deal each class's
        # groups round the folds instead, which keeps the classes spread across them.
        return _dealt_folds(rows, k, seed)
    folds = np.full(len(rows), -1)
    splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    with warnings.catch_warnings():
        # Rare classes with fewer groups than folds are expected; they land in fewer folds.
        warnings.filterwarnings("ignore", message="The least populated class")
        splits = splitter.split(np.zeros(len(rows)), rows["label"], rows["leak_group"])
        for fold, (_, held_out) in enumerate(splits):
            folds[held_out] = fold
    return folds


def _dealt_folds(rows: pd.DataFrame, k: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    group_label = rows.groupby("leak_group")["label"].first()
    fold_of_group: dict[object, int] = {}
    cursor = int(rng.integers(k))  # one cursor across classes keeps the fold sizes even
    for _, groups in group_label.groupby(group_label):
        for group in rng.permutation(groups.index.to_numpy()):
            fold_of_group[group] = cursor % k
            cursor += 1
    return rows["leak_group"].map(fold_of_group).to_numpy()


def _conflicted_rows(table: pd.DataFrame) -> np.ndarray:
    """Rows whose copies (same decoded pixels or same ISIC id) carry incompatible labels.

    Different images of one lesion, or near duplicates, may legitimately differ; only copies of
    one image count as a conflict.
    """
    conflicted = np.zeros(len(table), dtype=bool)
    for key in SAME_IMAGE_COLUMNS:
        known = table[key].notna().to_numpy()
        for _, rows in table[known].groupby(key):
            if len(rows) > 1 and not taxonomy.labels_agree(
                zip(rows["label"], rows["taxonomy"], strict=True)
            ):
                conflicted[rows.index.to_numpy()] = True
    return conflicted
