"""The manifest: one table that every data source becomes and every consumer takes.

Columns (one row per image):

================  ==============================================================================
path              absolute path of the image file
label             class in the project's 9-class vocabulary (:data:`melanoscan.taxonomy.CLASSES`)
source_label      the label as the source wrote it (folder name, HAM / ISIC code, diagnosis)
taxonomy          ``"isic9"`` for a class folder, ``"isic2016"`` .. ``"isic2020"`` for challenge
                  ground truth (``"isic2018"`` also for HAM10000): see ``docs/TAXONOMY.md``
source            the source as the user named it (directory or CSV path)
split             the source's own split (``"train"``, ``"val"``, ``"test"``), or empty
group_id          images that must stay together (HAM ``lesion_id``, ISIC 2020 ``patient_id``)
image_id          ISIC identifier (``ISIC_0024306``) when the file name or CSV gives one
content_hash      SHA-256 of the decoded RGB pixels, filled by :func:`scan`
================  ==============================================================================

:func:`scan` also adds ``width``, ``height``, ``mode``, ``format``, ``file_bytes`` and ``phash``.
Files that cannot be used are never dropped silently: they are listed in
:attr:`Manifest.skipped` with their reason.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field

import imagehash
import pandas as pd

from melanoscan.data.images import ImageDecodeError, decode, pixel_hash
from melanoscan.progress import progress_bar

MANIFEST_COLUMNS: tuple[str, ...] = (
    "path",
    "label",
    "source_label",
    "taxonomy",
    "source",
    "split",
    "group_id",
    "image_id",
    "content_hash",
)
SCAN_COLUMNS: tuple[str, ...] = ("width", "height", "mode", "format", "file_bytes", "phash")


@dataclass(frozen=True)
class Skipped:
    """A file that was found but cannot be used, and why."""

    path: str
    source: str
    reason: str


@dataclass
class Manifest:
    """The images of one or more sources, plus the files that were skipped.

    Args:
        images: one row per usable image, with :data:`MANIFEST_COLUMNS` (and, once scanned,
            :data:`SCAN_COLUMNS`).
        skipped: files that were found and rejected, with reasons.
    """

    images: pd.DataFrame
    skipped: list[Skipped] = field(default_factory=list)

    @property
    def scanned(self) -> bool:
        return "phash" in self.images.columns and bool(self.images["content_hash"].notna().all())

    def __len__(self) -> int:
        return len(self.images)

    @staticmethod
    def concat(parts: Iterable[Manifest]) -> Manifest:
        parts = list(parts)
        frames = [p.images for p in parts if len(p.images)]
        images = pd.concat(frames, ignore_index=True) if frames else empty_table()
        return Manifest(images=images, skipped=[s for p in parts for s in p.skipped])

    def skipped_table(self) -> pd.DataFrame:
        return skipped_table(self.skipped)


def skipped_table(skipped: Iterable[Skipped]) -> pd.DataFrame:
    """Skipped files as a table: ``path``, ``source``, ``reason``."""
    return pd.DataFrame([vars(s) for s in skipped], columns=["path", "source", "reason"])


def empty_table() -> pd.DataFrame:
    return pd.DataFrame({column: pd.Series(dtype="object") for column in MANIFEST_COLUMNS})


def make_table(rows: list[dict[str, str | None]]) -> pd.DataFrame:
    """Build a manifest table from row dicts, filling absent columns with None."""
    if not rows:
        return empty_table()
    table = pd.DataFrame(rows)
    for column in MANIFEST_COLUMNS:
        if column not in table.columns:
            table[column] = None
    return table[list(MANIFEST_COLUMNS)].astype("object")


@dataclass(frozen=True)
class _ScanResult:
    index: int
    content_hash: str | None = None
    phash: str | None = None
    width: int | None = None
    height: int | None = None
    mode: str | None = None
    format: str | None = None
    file_bytes: int | None = None
    error: str | None = None


def _scan_one(item: tuple[int, str]) -> _ScanResult:
    index, path = item
    try:
        decoded = decode(path)
    except ImageDecodeError as exc:
        return _ScanResult(index=index, error=exc.reason)
    image = decoded.image
    return _ScanResult(
        index=index,
        content_hash=pixel_hash(image),
        phash=str(imagehash.phash(image)),
        width=image.width,
        height=image.height,
        mode=decoded.source_mode,
        format=decoded.source_format,
        file_bytes=os.path.getsize(path),
    )


def _scan_all(paths: list[str], workers: int) -> Iterator[_ScanResult]:
    items = list(enumerate(paths))
    if workers <= 1 or len(items) < 64:
        yield from map(_scan_one, items)
        return
    with ProcessPoolExecutor(max_workers=workers) as pool:
        yield from pool.map(_scan_one, items, chunksize=32)


def default_scan_workers() -> int:
    """Processes that decode images while scanning (one per core, at most 8)."""
    return max(1, min(8, len(os.sched_getaffinity(0))))


def scan(manifest: Manifest, *, workers: int | None = None, show_progress: bool = True) -> Manifest:
    """Decode every image once: fill the content hash, perceptual hash, size and mode.

    Undecodable files move from the table to :attr:`Manifest.skipped` with their reason;
    the scan never stops on a bad file.
    """
    table = manifest.images.reset_index(drop=True).copy()
    paths = table["path"].astype(str).tolist()
    results: list[_ScanResult] = []
    with progress_bar("Scanning images", total=len(paths), enabled=show_progress) as advance:
        for result in _scan_all(paths, workers or default_scan_workers()):
            results.append(result)
            advance(1)
    results.sort(key=lambda r: r.index)
    skipped = list(manifest.skipped)
    for result in results:
        if result.error is not None:
            row = table.iloc[result.index]
            skipped.append(Skipped(path=row["path"], source=row["source"], reason=result.error))
    ok = [r for r in results if r.error is None]
    scanned = table.iloc[[r.index for r in ok]].reset_index(drop=True)
    scanned["content_hash"] = [r.content_hash for r in ok]
    for column in SCAN_COLUMNS:
        scanned[column] = pd.Series([getattr(r, column) for r in ok], dtype="object")
    for column in ("width", "height", "file_bytes"):
        scanned[column] = scanned[column].astype("int64")
    return Manifest(images=scanned, skipped=skipped)
