"""The dataset audit: what a dataset really holds before anyone trains on it.

:func:`audit` takes a scanned :class:`Manifest` and returns an :class:`AuditReport`, a plain
data structure whose :meth:`AuditReport.to_dict` is the ``--json`` output (schema in
``docs/AUDIT.md``). Rendering (terminal, plots, HTML) lives in :mod:`melanoscan.data.audit_report`.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from itertools import combinations
from typing import Any

import numpy as np
import pandas as pd

from melanoscan import taxonomy
from melanoscan.data.duplicates import (
    NEAR_DUPLICATE_MAX_DISTANCE,
    connected_components,
    identity_groups,
    near_duplicate_pairs,
)
from melanoscan.data.manifest import Manifest

SCHEMA_VERSION = 2
UNSPLIT = "unsplit"
ENTRY_COLUMNS = ("path", "label", "taxonomy", "split", "source", "image_id", "content_hash")


@dataclass
class ImageGroup:
    """Several manifest entries that belong together for one reason.

    Args:
        key: what they share (a content hash, an ISIC id, or a group number).
        entries: one dict per image: path, label, taxonomy, split, source, image_id,
            content_hash.
        by: how they were linked: ``"content"``, ``"image_id"`` or ``"phash"``.
        labels: the distinct labels among the entries.
        splits: the distinct splits among the entries (``"unsplit"`` for sources without one).
        max_distance: for near duplicates, the largest pHash distance inside the group.
        sources: the distinct sources among the entries.
    """

    key: str
    entries: list[dict[str, Any]]
    by: list[str]
    labels: list[str]
    splits: list[str]
    max_distance: int | None = None
    sources: list[str] = field(default_factory=list)


@dataclass
class SourcePair:
    """What two sources have in common (the ``source_pairs`` section).

    Args:
        sources: the two sources, in sorted order (``a``, ``b``).
        shared_images: images (equal pixels or equal ISIC id) that both sources hold.
        shared_by_split: the same, by the split each side files them under: ``{a_split:
            {b_split: images}}``.
        shared_lesions: lesions (``group_id``: HAM ``lesion_id``, ISIC 2020 patient) in both.
        label_disagreements: shared images whose labels in ``a`` and ``b`` are incompatible.
        disagreeing_labels: those, by label pair: ``{a_label: {b_label: images}}``; an image
            filed under two classes in one source counts once per incompatible pair.
    """

    sources: list[str]
    shared_images: int = 0
    shared_by_split: dict[str, dict[str, int]] = field(default_factory=dict)
    shared_lesions: int = 0
    label_disagreements: int = 0
    disagreeing_labels: dict[str, dict[str, int]] = field(default_factory=dict)


@dataclass
class AuditReport:
    """Everything the audit found; see ``docs/AUDIT.md`` for the JSON schema."""

    sources: list[str]
    total_images: int
    counts: dict[str, dict[str, int]]
    class_balance: dict[str, Any]
    exact_duplicates: list[ImageGroup]
    near_duplicates: list[ImageGroup]
    cross_split: list[ImageGroup]
    label_conflicts: list[ImageGroup]
    source_pairs: list[SourcePair]
    cross_source: list[ImageGroup]
    cross_source_conflicts: list[ImageGroup]
    skipped: list[dict[str, str]]
    image_stats: dict[str, Any]
    near_duplicate_max_distance: int = NEAR_DUPLICATE_MAX_DISTANCE
    schema_version: int = SCHEMA_VERSION
    summary: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def audit(
    manifest: Manifest,
    *,
    sources: list[str] | None = None,
    near_max_distance: int = NEAR_DUPLICATE_MAX_DISTANCE,
) -> AuditReport:
    """Audit a scanned manifest: counts, duplicates, leaks between splits and sources, conflicts."""
    if not manifest.scanned:
        raise ValueError("audit needs a scanned manifest (melanoscan.data.manifest.scan)")
    table = manifest.images.reset_index(drop=True).copy()
    table["split"] = table["split"].fillna(UNSPLIT)
    identity = identity_groups(table)
    same_image = _groups(table, identity)
    cross_source = [g for g in same_image if len(g.sources) > 1]
    report = AuditReport(
        sources=sources or sorted(table["source"].unique().tolist()),
        total_images=len(table),
        counts=class_counts(table),
        class_balance=class_balance(table),
        exact_duplicates=_groups(
            table, table.groupby("content_hash").ngroup().to_numpy(), "content"
        ),
        near_duplicates=_near_duplicate_groups(table, near_max_distance),
        cross_split=[g for g in same_image if len(g.splits) > 1],
        label_conflicts=[g for g in same_image if _conflicting(g)],
        source_pairs=source_pairs(table, identity),
        cross_source=cross_source,
        cross_source_conflicts=[g for g in cross_source if _disagree_between_sources(g)],
        skipped=[
            {"path": s.path, "source": s.source, "reason": s.reason} for s in manifest.skipped
        ],
        image_stats=image_stats(table),
        near_duplicate_max_distance=near_max_distance,
    )
    report.summary = {
        "images": report.total_images,
        "skipped": len(report.skipped),
        "exact_duplicate_groups": len(report.exact_duplicates),
        "exact_duplicate_images": sum(len(g.entries) for g in report.exact_duplicates),
        "near_duplicate_groups": len(report.near_duplicates),
        "cross_split_groups": len(report.cross_split),
        "label_conflict_groups": len(report.label_conflicts),
        "cross_source_groups": len(report.cross_source),
        "cross_source_conflict_groups": len(report.cross_source_conflicts),
    }
    return report


def source_pairs(table: pd.DataFrame, identity: np.ndarray) -> list[SourcePair]:
    """Every pair of sources, with the images and lesions they share and their disagreements.

    Args:
        table: the manifest table (``split`` filled).
        identity: :func:`identity_groups` of ``table``.
    """
    names = sorted(table["source"].astype(str).unique().tolist())
    pairs = {(a, b): SourcePair(sources=[a, b]) for a, b in combinations(names, 2)}
    by_split: dict[tuple[str, str], Counter[tuple[str, str]]] = {k: Counter() for k in pairs}
    by_label: dict[tuple[str, str], Counter[tuple[str, str]]] = {k: Counter() for k in pairs}
    spread = table.assign(_identity=identity)
    spread = spread[spread.groupby("_identity")["source"].transform("nunique") > 1]
    for _, rows in spread.groupby("_identity"):
        per_source = {str(source): part for source, part in rows.groupby("source")}
        for a, b in combinations(sorted(per_source), 2):
            pair = pairs[(a, b)]
            pair.shared_images += 1
            for splits in _product(per_source[a], per_source[b], "split"):
                by_split[(a, b)][splits] += 1
            incompatible = {
                (label_a, label_b)
                for (label_a, kind_a), (label_b, kind_b) in _product(
                    per_source[a], per_source[b], ("label", "taxonomy")
                )
                if not taxonomy.labels_compatible(label_a, kind_a, label_b, kind_b)
            }
            if incompatible:
                pair.label_disagreements += 1
                by_label[(a, b)].update(incompatible)
    lesions = table.dropna(subset=["group_id"]).groupby("group_id")["source"].unique()
    for sources in lesions:
        for a, b in combinations(sorted(map(str, sources)), 2):
            pairs[(a, b)].shared_lesions += 1
    for key, pair in pairs.items():
        pair.shared_by_split = _nested(by_split[key])
        pair.disagreeing_labels = _nested(by_label[key])
    return list(pairs.values())


def _product(a: pd.DataFrame, b: pd.DataFrame, columns: str | tuple[str, ...]) -> set[Any]:
    """The distinct ``(value in a, value in b)`` combinations of one or more columns."""
    def values(rows: pd.DataFrame) -> set[Any]:
        if isinstance(columns, str):
            return set(rows[columns].astype(str))
        return set(zip(*(rows[c].astype(str) for c in columns), strict=True))

    return {(x, y) for x in values(a) for y in values(b)}


def _nested(counts: Counter[tuple[str, str]]) -> dict[str, dict[str, int]]:
    nested: dict[str, dict[str, int]] = {}
    for (outer, inner), count in sorted(counts.items()):
        nested.setdefault(outer, {})[inner] = count
    return nested


def class_counts(table: pd.DataFrame) -> dict[str, dict[str, int]]:
    """Images per split and class (every class listed, zeros included), plus an ``all`` split."""
    counts: dict[str, dict[str, int]] = {}
    for split, rows in [("all", table), *table.groupby("split", sort=True)]:
        per_class = rows["label"].value_counts()
        counts[str(split)] = {name: int(per_class.get(name, 0)) for name in taxonomy.CLASSES}
    return counts


def class_balance(table: pd.DataFrame) -> dict[str, Any]:
    per_class = table["label"].value_counts()
    present = {name: int(per_class[name]) for name in taxonomy.CLASSES if name in per_class}
    if not present:
        return {"least": None, "most": None, "imbalance_ratio": None, "missing_classes": []}
    least = min(present, key=present.__getitem__)
    most = max(present, key=present.__getitem__)
    return {
        "least": {"class": least, "count": present[least]},
        "most": {"class": most, "count": present[most]},
        "imbalance_ratio": round(present[most] / present[least], 3),
        "missing_classes": [name for name in taxonomy.CLASSES if name not in present],
    }


def image_stats(table: pd.DataFrame) -> dict[str, Any]:
    def summary(column: str) -> dict[str, float]:
        values = table[column].astype(float)
        return {
            "min": float(values.min()),
            "median": float(values.median()),
            "max": float(values.max()),
        }

    sizes = (table["width"].astype(str) + "x" + table["height"].astype(str)).value_counts()
    return {
        "width": summary("width"),
        "height": summary("height"),
        "file_bytes": summary("file_bytes"),
        "modes": {str(k): int(v) for k, v in table["mode"].value_counts().items()},
        "formats": {str(k): int(v) for k, v in table["format"].value_counts().items()},
        "most_common_sizes": {str(k): int(v) for k, v in sizes.head(10).items()},
        "distinct_sizes": len(sizes),
    }


def _near_duplicate_groups(table: pd.DataFrame, max_distance: int) -> list[ImageGroup]:
    """Groups of different images (by content) whose pHashes are within ``max_distance``."""
    unique = table.drop_duplicates("content_hash").reset_index()
    pairs = near_duplicate_pairs(unique["phash"].tolist(), max_distance)
    pairs = [(i, j, d) for i, j, d in pairs if i != j]
    if not pairs:
        return []
    component = connected_components(len(unique), ((i, j) for i, j, _ in pairs))
    worst: dict[int, int] = {}
    for i, _, distance in pairs:
        worst[component[i]] = max(worst.get(component[i], 0), distance)
    hash_component = dict(zip(unique["content_hash"], component, strict=True))
    labels = table["content_hash"].map(hash_component).to_numpy()
    groups = _groups(table, labels, "phash")
    linked = [g for g in groups if len({e["content_hash"] for e in g.entries}) > 1]
    for group in linked:
        group.max_distance = worst[hash_component[group.entries[0]["content_hash"]]]
    return linked


def _groups(table: pd.DataFrame, labels: np.ndarray, by: str | None = None) -> list[ImageGroup]:
    """One :class:`ImageGroup` per label value shared by more than one row."""
    groups = []
    for _, rows in table.groupby(np.asarray(labels), sort=True):
        if len(rows) < 2:
            continue
        links = [by] if by else _links(rows)
        entries = rows[list(ENTRY_COLUMNS)].to_dict("records")
        groups.append(
            ImageGroup(
                key=_key(rows, links[0]),
                entries=entries,
                by=links,
                labels=sorted(rows["label"].unique().tolist()),
                splits=sorted(rows["split"].unique().tolist()),
                sources=sorted(rows["source"].astype(str).unique().tolist()),
            )
        )
    return groups


def _links(rows: pd.DataFrame) -> list[str]:
    links = []
    if rows["content_hash"].duplicated().any():
        links.append("content")
    ids = rows["image_id"].dropna()
    if ids.duplicated().any():
        links.append("image_id")
    return links


def _key(rows: pd.DataFrame, by: str) -> str:
    if by == "image_id" and rows["image_id"].notna().any():
        return str(rows["image_id"].dropna().iloc[0])
    return str(rows["content_hash"].iloc[0])


def _conflicting(group: ImageGroup) -> bool:
    return not taxonomy.labels_agree((e["label"], e["taxonomy"]) for e in group.entries)


def _disagree_between_sources(group: ImageGroup) -> bool:
    """Whether two entries of different sources carry incompatible labels."""
    return any(
        a["source"] != b["source"]
        and not taxonomy.labels_compatible(a["label"], a["taxonomy"], b["label"], b["taxonomy"])
        for a, b in combinations(group.entries, 2)
    )
