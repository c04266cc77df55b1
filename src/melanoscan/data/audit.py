"""The dataset audit: what a dataset really holds before anyone trains on it.

:func:`audit` takes a scanned :class:`Manifest` and returns an :class:`AuditReport`, a plain
data structure whose :meth:`AuditReport.to_dict` is the ``--json`` output (schema in
``docs/AUDIT.md``). Rendering (terminal, plots, HTML) lives in :mod:`melanoscan.data.audit_report`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
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

SCHEMA_VERSION = 1
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
    """

    key: str
    entries: list[dict[str, Any]]
    by: list[str]
    labels: list[str]
    splits: list[str]
    max_distance: int | None = None


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
    """Audit a scanned manifest: counts, duplicates, leaks between splits, label conflicts."""
    if not manifest.scanned:
        raise ValueError("audit needs a scanned manifest (melanoscan.data.manifest.scan)")
    table = manifest.images.reset_index(drop=True).copy()
    table["split"] = table["split"].fillna(UNSPLIT)
    same_image = _groups(table, identity_groups(table))
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
    }
    return report


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
