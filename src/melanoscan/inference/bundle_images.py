"""A bundle's own training and validation images, found again in data sources by content
hash and preprocessed with its recipe: what int8 calibration and the parity check run on."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from melanoscan.inference.quantize import QuantizationError

__all__ = [
    "bundle_split_files",
    "calibration_files",
    "calibration_inputs",
    "labelled_inputs",
    "validation_inputs",
]


def calibration_files(
    bundle_dir: Path, count: int = 300, seed: int = 0, sources: Sequence[str | Path] | None = None
) -> list[Path]:
    """A class-balanced random sample of the images a bundle was trained on.

    The bundle lists its training images by content hash (``training_images.csv``); candidates
    from its training sources are decoded, hashed and kept when they are training (not
    validation) images, taking the classes in turn so that rare classes are represented.

    Args:
        bundle_dir: the bundle.
        count: how many images.
        seed: sampling seed.
        sources: data sources to look in (``None``: the bundle's ``training.sources``, as
            recorded, i.e. relative to where it was trained).

    Raises:
        QuantizationError: the bundle lists no training image or none was found.
    """
    return [path for path, _ in bundle_split_files(bundle_dir, "train", count, seed, sources)]


def bundle_split_files(
    bundle_dir: Path,
    split: str,
    count: int,
    seed: int = 0,
    sources: Sequence[str | Path] | None = None,
    balanced: bool = True,
) -> list[tuple[Path, str]]:
    """A random sample of the images of one split (``train`` or ``val``) of a bundle's training.

    Candidates from the sources are decoded, hashed and kept when ``training_images.csv`` lists
    their content under ``split``; each content at most once.

    Args:
        bundle_dir: the bundle.
        split: ``train`` (e.g. to calibrate a quantisation) or ``val`` (to check it).
        count: how many images (fewer when the sources hold fewer).
        seed: sampling seed.
        sources: data sources to look in (``None``: the bundle's ``training.sources``, as
            recorded, i.e. relative to where it was trained).
        balanced: take the classes in turn, so that rare classes are represented; else a
            plain random sample, with the split's class mix.

    Returns:
        ``(path, label)`` pairs.

    Raises:
        QuantizationError: the bundle lists no image of ``split`` or none was found.
    """
    from melanoscan.bundle import TRAINING_IMAGES_FILE, read_metadata, read_training_images
    from melanoscan.data.images import ImageDecodeError, decode, pixel_hash
    from melanoscan.data.sources import read_sources

    bundle_dir = Path(bundle_dir)
    trained = read_training_images(bundle_dir)
    if trained.empty:
        raise QuantizationError(f"{bundle_dir} lists no training images ({TRAINING_IMAGES_FILE})")
    hashes = set(trained.loc[trained["split"] == split, "content_hash"])
    sources = list(sources or read_metadata(bundle_dir).training.get("sources") or [])
    if not hashes or not sources:
        raise QuantizationError(f"{bundle_dir} records no {split} image or no source")
    table = read_sources(sources).images
    rng = np.random.default_rng(seed)
    groups = table.groupby("label", sort=True) if balanced else [("", table)]
    queues = [list(rng.permutation(group[["path", "label"]].to_numpy()))
              for _, group in groups]
    picked: list[tuple[Path, str]] = []
    seen: set[str] = set()
    while len(picked) < count and any(queues):
        for queue in queues:
            while queue:
                path, label = queue.pop()
                try:
                    digest = pixel_hash(decode(Path(path)).image)
                except ImageDecodeError:
                    continue
                if digest in hashes and digest not in seen:
                    seen.add(digest)
                    picked.append((Path(path), str(label)))
                    break
            if len(picked) == count:
                break
    if not picked:
        raise QuantizationError(f"none of the {split} images of {bundle_dir} is in "
                                f"{', '.join(map(str, sources))}")
    return picked


def validation_inputs(
    bundle_dir: Path, count: int = 1000, seed: int = 0,
    sources: Sequence[str | Path] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Preprocessed inputs and melanoma truth of a random sample of a bundle's validation images,
    for :func:`parity_report` (:func:`bundle_split_files` with ``split="val"``, unbalanced).

    Args:
        bundle_dir: the bundle.
        count: how many images.
        seed: sampling seed.
        sources: see :func:`bundle_split_files`.
    """
    from melanoscan import taxonomy

    picked = bundle_split_files(bundle_dir, "val", count, seed, sources, balanced=False)
    inputs = _preprocessed(bundle_dir, [path for path, _ in picked])
    return inputs, np.array([label == taxonomy.MELANOMA for _, label in picked], dtype=bool)


def _preprocessed(bundle_dir: Path, files: Sequence[Path]) -> np.ndarray:
    """The bundle's preprocessing of image files, ``(N, 3, S, S)``."""
    from melanoscan.bundle import read_metadata
    from melanoscan.data.images import decode
    from melanoscan.preprocess import Preprocessing

    preprocessing = Preprocessing.from_dict(read_metadata(bundle_dir).preprocessing)
    return np.stack([preprocessing(decode(path).image) for path in files])


def calibration_inputs(
    bundle_dir: Path, count: int = 300, seed: int = 0, sources: Sequence[str | Path] | None = None
) -> np.ndarray:
    """Preprocessed inputs ``(N, 3, S, S)`` of :func:`calibration_files`, with the bundle's recipe.

    Args:
        bundle_dir: the bundle.
        count: how many images.
        seed: sampling seed.
        sources: see :func:`calibration_files`.
    """
    return _preprocessed(bundle_dir, calibration_files(bundle_dir, count, seed, sources))


def labelled_inputs(
    bundle_dir: Path, data: Path, limit: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Preprocessed inputs and melanoma truth of a labelled set, for :func:`parity_report`.

    Args:
        bundle_dir: the bundle whose preprocessing is applied.
        data: any source :func:`melanoscan.data.sources.read_source` reads (e.g. the ISIC 2018
            Task 3 test folder); rows are taken in path order.
        limit: only the first ``limit`` images.

    Returns:
        ``(inputs (N, 3, S, S) float32, melanoma (N,) bool)``; unreadable files are skipped.
    """
    from melanoscan import taxonomy
    from melanoscan.bundle import read_metadata
    from melanoscan.data.images import ImageDecodeError, decode
    from melanoscan.data.sources import read_sources
    from melanoscan.preprocess import Preprocessing

    table = read_sources([data]).images.sort_values("path").reset_index(drop=True)
    if limit:
        table = table.iloc[:limit]
    preprocessing = Preprocessing.from_dict(read_metadata(bundle_dir).preprocessing)
    arrays, melanoma = [], []
    for path, label in zip(table["path"], table["label"], strict=True):
        try:
            arrays.append(preprocessing(decode(path).image))
        except ImageDecodeError:
            continue
        melanoma.append(label == taxonomy.MELANOMA)
    if not arrays:
        raise QuantizationError(f"no readable labelled image in {data}")
    return np.stack(arrays), np.asarray(melanoma, dtype=bool)
