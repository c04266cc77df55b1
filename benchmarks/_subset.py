"""Shared by the benchmark scripts: a fixed, stratified subset of a test set for quick runs."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def stratified_subset(labels: Sequence[object], limit: int | None, seed: int = 0) -> np.ndarray:
    """Sorted row indices: every row, or about ``limit`` rows in the labels' proportions.

    Each label keeps at least one row (so a subset can score an AUC), which can take the subset
    a few rows past ``limit``; the rest is shared out by largest remainder. The same labels,
    limit and seed always give the same rows.
    """
    values = np.asarray(labels)
    if limit is None or limit >= len(values):
        return np.arange(len(values))
    if limit < 1:
        raise ValueError(f"limit must be at least 1, got {limit}")
    classes, counts = np.unique(values, return_counts=True)
    share = counts * limit / len(values)
    quota = np.maximum(1, np.floor(share)).astype(int)
    while quota.sum() < limit:
        remainder = np.where(quota < counts, share - quota, -np.inf)
        quota[int(np.argmax(remainder))] += 1
    rng = np.random.default_rng(seed)
    chosen = [rng.choice(np.flatnonzero(values == c), q, replace=False)
              for c, q in zip(classes, quota, strict=True)]
    return np.sort(np.concatenate(chosen))
