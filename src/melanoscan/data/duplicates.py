"""Finding the same image twice: exact (decoded pixels), near (perceptual hash) and by ISIC id."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd

NEAR_DUPLICATE_MAX_DISTANCE = 4
"""Largest Hamming distance (of 64 bits) between pHashes that counts as a near duplicate.

Measured on the shared data (docs/AUDIT.md): on isic9, pairs at distance 0-4 were mostly the
same lesion re-photographed or re-cropped; on HAM10000-style images (a centred lesion on plain
skin) pHash also matches different lesions at 4 and many more at 6. Near duplicates are
therefore a list for human review and a reason to keep images on one side of a split (which
costs nothing when wrong), never a reason to exclude an image.
"""


def connected_components(n: int, pairs: Iterable[tuple[int, int]]) -> np.ndarray:
    """Label ``n`` items so that linked items share a label (union-find); returns an int array."""
    parent = np.arange(n)

    def find(i: int) -> int:
        root = i
        while parent[root] != root:
            root = parent[root]
        while parent[i] != root:
            parent[i], i = root, parent[i]
        return int(root)

    for a, b in pairs:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    return np.array([find(i) for i in range(n)])


def pairs_sharing(values: Sequence[object]) -> list[tuple[int, int]]:
    """Index pairs linking each row to the first row with the same non-null value."""
    first: dict[object, int] = {}
    pairs = []
    for index, value in enumerate(values):
        if value is None or (isinstance(value, float) and np.isnan(value)):
            continue
        if value in first:
            pairs.append((first[value], index))
        else:
            first[value] = index
    return pairs


def near_duplicate_pairs(
    phashes: Sequence[str], max_distance: int = NEAR_DUPLICATE_MAX_DISTANCE
) -> list[tuple[int, int, int]]:
    """All pairs ``(i, j, distance)`` with ``i < j`` whose pHash distance is <= ``max_distance``.

    Exhaustive, in row blocks of about 16M distances each: about a second for 10,000 images.
    """
    hashes = np.array([int(h, 16) for h in phashes], dtype=np.uint64)
    block = max(1, 16_000_000 // max(1, len(hashes)))
    found: list[tuple[int, int, int]] = []
    for start in range(0, len(hashes), block):
        chunk = hashes[start : start + block]
        distances = np.bitwise_count(chunk[:, None] ^ hashes[None, :])
        rows, cols = np.nonzero(distances <= max_distance)
        for r, c in zip(rows.tolist(), cols.tolist(), strict=True):
            i = start + r
            if i < c:
                found.append((i, c, int(distances[r, c])))
    return found


SAME_IMAGE_COLUMNS: tuple[str, ...] = ("content_hash", "image_id")
"""Columns whose equal values mean "the same image": decoded pixels and ISIC id."""


def pairs_sharing_columns(table: pd.DataFrame, columns: Sequence[str]) -> list[tuple[int, int]]:
    """Index pairs linking rows that share a non-null value in any of ``columns`` present."""
    pairs: list[tuple[int, int]] = []
    for column in columns:
        if column in table.columns:
            pairs += pairs_sharing(table[column].tolist())
    return pairs


def identity_groups(table: pd.DataFrame) -> np.ndarray:
    """Group rows that are the same image: equal decoded pixels or equal ISIC id."""
    return connected_components(len(table), pairs_sharing_columns(table, SAME_IMAGE_COLUMNS))
