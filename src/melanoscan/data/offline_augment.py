"""Offline augmentation: the classic notebook's Augmentor step, done without leaking.

The notebook wrote augmented copies of every image before splitting, so copies of validation
images ended up in training. Here only rows of the training split are accepted, so the split
is made first and no augmented copy of a validation or test image can exist.
"""

from __future__ import annotations

import hashlib
import os
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import imagehash
import numpy as np
import pandas as pd
from PIL import Image

from melanoscan.data.cache import ResizedImageLoader
from melanoscan.data.images import ImageDecodeError, pixel_hash
from melanoscan.data.manifest import Skipped
from melanoscan.progress import progress_bar

__all__ = ["OFFLINE_SOURCE", "generate_offline_augmentations"]

OFFLINE_SOURCE = "offline_augmentation"


def generate_offline_augmentations(
    train: pd.DataFrame,
    out_dir: Path,
    *,
    per_class: int,
    transform: Callable[[np.ndarray], np.ndarray],
    loader: ResizedImageLoader,
    seed: int = 0,
    show_progress: bool = False,
) -> tuple[pd.DataFrame, list[Skipped]]:
    """Write augmented copies of training images until each class has ``per_class`` images.

    A class with ``n < per_class`` rows gets ``per_class - n`` PNGs in ``out_dir/<class>/``,
    named ``<original stem>_aug<k>.png``, from its originals taken round-robin in an order
    shuffled with ``seed``. Images are written at the loader's resized size. The transform's
    own randomness is its own: build it with a seed for a reproducible set.

    Args:
        train: manifest rows of the training split only (extra columns are kept).
        out_dir: where the images are written (one folder per class).
        per_class: target number of images per class.
        transform: ``uint8`` ``(S, S, 3)`` -> same, e.g. a partial of
            :func:`melanoscan.data.augment.augment`.
        loader: decodes and resizes the originals.
        seed: seed of the order in which originals are used.
        show_progress: draw a progress bar on stderr.

    Returns:
        The new rows (``train``'s columns plus ``augmented_from``, the original's path) and the
        originals that could not be read.
    """
    if per_class < 1:
        raise ValueError(f"per_class must be at least 1, got {per_class}")
    if "split" in train.columns:
        others = train[train["split"] != "train"]
        if len(others):
            found = sorted({str(s) for s in others["split"]})
            raise ValueError(
                f"offline augmentation takes training rows only; {len(others)} row(s) have "
                f"split {found}: augmented copies of held-out images would leak"
            )
    table = train.reset_index(drop=True)
    out_dir = Path(out_dir)
    rng = np.random.default_rng(seed)
    classes = sorted(str(label) for label in table["label"].unique())
    todo = {c: max(0, per_class - int((table["label"] == c).sum())) for c in classes}

    rows: list[dict[str, Any]] = []
    skipped: list[Skipped] = []
    total = sum(todo.values())
    with progress_bar("Offline augmentation", total=total, enabled=show_progress) as advance:
        for label in classes:
            if not todo[label]:
                continue
            members = table.index[table["label"] == label].to_numpy()
            order = [int(i) for i in rng.permutation(members)]
            written = _augment_class(
                table, order, todo[label], out_dir / label, transform, loader, skipped, advance
            )
            rows.extend(written)

    columns = [*table.columns, "augmented_from"]
    if not rows:
        return pd.DataFrame({c: pd.Series(dtype="object") for c in columns}), skipped
    return pd.DataFrame(rows, columns=columns), skipped


def _augment_class(
    table: pd.DataFrame,
    order: list[int],
    count: int,
    folder: Path,
    transform: Callable[[np.ndarray], np.ndarray],
    loader: ResizedImageLoader,
    skipped: list[Skipped],
    advance: Callable[[int], None],
) -> list[dict[str, Any]]:
    stems = _unique_stems({i: str(table.at[i, "path"]) for i in order})
    uses = dict.fromkeys(order, 0)
    # A minority class has fewer than per_class originals, so keeping them decoded is cheap.
    pixels: dict[int, np.ndarray] = {}
    rows: list[dict[str, Any]] = []
    position = 0
    while len(rows) < count and order:
        original = order[position % len(order)]
        row = table.loc[original]
        if original not in pixels:
            try:
                pixels[original] = loader.load(str(row["path"]), _hash_or_none(row))
            except ImageDecodeError as exc:
                skipped.append(Skipped(str(row["path"]), str(row.get("source")), exc.reason))
                order.remove(original)
                continue  # the next original moves into this position
        augmented = np.ascontiguousarray(transform(pixels[original]), dtype=np.uint8)
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / f"{stems[original]}_aug{uses[original]}.png"
        image = Image.fromarray(augmented)
        image.save(target, format="PNG")
        uses[original] += 1
        rows.append(_new_row(row, target, image))
        advance(1)
        position += 1
    return rows


def _new_row(original: pd.Series, target: Path, image: Image.Image) -> dict[str, Any]:
    row = original.to_dict()
    row.update(
        path=str(target.resolve()),
        source=OFFLINE_SOURCE,
        split="train",
        image_id=None,
        content_hash=pixel_hash(image),
        augmented_from=str(original["path"]),
    )
    # Scan columns, when present, describe the new file rather than the original.
    scanned = {
        "width": image.width,
        "height": image.height,
        "mode": "RGB",
        "format": "PNG",
        "file_bytes": os.path.getsize(target),
        "phash": str(imagehash.phash(image)),
    }
    row.update({k: v for k, v in scanned.items() if k in original.index})
    return row


def _unique_stems(paths: dict[int, str]) -> dict[int, str]:
    """File stem per original; equal stems (same name in two folders) get a path hash added."""
    stems = {i: Path(p).stem for i, p in paths.items()}
    counts = Counter(stems.values())
    return {
        i: f"{stem}-{hashlib.sha1(paths[i].encode()).hexdigest()[:8]}" if counts[stem] > 1 else stem
        for i, stem in stems.items()
    }


def _hash_or_none(row: pd.Series) -> str | None:
    value = row.get("content_hash")
    return value if isinstance(value, str) and value else None
