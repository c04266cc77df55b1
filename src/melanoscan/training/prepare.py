"""From data sources to the split a run trains on: read, scan, clean, split, (offline augment).

Everything excluded or skipped on the way is written next to the split, with its reason.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import pandas as pd

from melanoscan import taxonomy
from melanoscan.data.augment import augment, build_train_transform
from melanoscan.data.cache import ResizedImageLoader
from melanoscan.data.manifest import Skipped, scan, skipped_table
from melanoscan.data.offline_augment import generate_offline_augmentations
from melanoscan.data.sources import HOLDOUT_SPLIT, DataSourceError, read_sources
from melanoscan.data.splits import CleaningPolicy, train_val_split
from melanoscan.files import NAME_ERRORS, write_csv
from melanoscan.preprocess import Preprocessing
from melanoscan.training.config import TrainConfig
from melanoscan.training.errors import TrainingInputError

__all__ = ["PreparedData", "data_notes", "prepare_data", "read_prepared"]

SPLIT_FILE = "split.csv"
EXCLUDED_FILE = "excluded.csv"
SKIPPED_FILE = "skipped.csv"
RELABELLED_FILE = "relabelled.csv"
SUMMARY_FILE = "data_summary.json"
OFFLINE_DIR = "offline_augmented"


@dataclass
class PreparedData:
    """The split table a run trains on and what happened on the way.

    Args:
        table: manifest rows with ``split`` in train / val / eval splits.
        summary: sources, counts per split and class, exclusions, skipped files, warnings.
        warnings: problems worth a user's attention that do not stop training.
    """

    table: pd.DataFrame
    summary: dict[str, Any]
    warnings: list[str] = field(default_factory=list)


def prepare_data(
    data: Sequence[Path],
    config: TrainConfig,
    preprocessing: Preprocessing,
    run_dir: Path,
    *,
    show_progress: bool = True,
) -> PreparedData:
    """Read and scan ``data``, apply the cleaning policy, split, write the record to ``run_dir``.

    Raises:
        TrainingInputError: no readable image, fewer than two classes to train on, or an empty
            validation split.
    """
    try:
        manifest = scan(read_sources(data, holdout=config.data.holdout_sources),
                        show_progress=show_progress)
    except DataSourceError as exc:
        raise TrainingInputError(str(exc)) from None
    if len(manifest) == 0:
        skipped_note = ""
        if manifest.skipped:
            write_csv(manifest.skipped_table(), run_dir / SKIPPED_FILE)
            skipped_note = (f" ({len(manifest.skipped)} files skipped, listed in "
                            f"{run_dir / SKIPPED_FILE})")
        raise TrainingInputError(f"no readable image in {', '.join(map(str, data))}{skipped_note}")
    _check_classes(manifest.images)
    policy = CleaningPolicy(
        exclude_label_conflicts=config.data.exclude_label_conflicts,
        exclude_eval_overlap=config.data.exclude_eval_overlap,
        group_near_duplicates=config.data.group_near_duplicates,
        drop_duplicate_copies=config.data.drop_duplicate_copies,
        resolve_conflicts_by_authority=config.data.resolve_conflicts_by_authority,
        eval_splits=("test", HOLDOUT_SPLIT),
    )
    try:
        result = train_val_split(
            manifest.images, val_fraction=config.data.val_fraction,
            seed=config.data.split_seed, policy=policy,
        )
    except ValueError as exc:
        raise TrainingInputError(f"cannot split the data: {exc}") from None
    table = result.table
    _check_split(table)
    warnings = _class_warnings(table, result.excluded)
    skipped = manifest.skipped
    if config.balance.strategy == "offline":
        table, offline_skipped = _add_offline_augmentations(
            table, config, preprocessing, run_dir, show_progress
        )
        skipped = [*skipped, *offline_skipped]
    write_csv(skipped_table(skipped), run_dir / SKIPPED_FILE)
    write_csv(result.excluded, run_dir / EXCLUDED_FILE)
    if not result.relabelled.empty:
        write_csv(result.relabelled, run_dir / RELABELLED_FILE)
    write_csv(table, run_dir / SPLIT_FILE)
    summary = {
        "sources": [str(d) for d in data],
        "counts": _counts(table),
        "excluded": result.summary()["excluded"],
        "relabelled": len(result.relabelled),
        "holdout_sources": list(config.data.holdout_sources),
        "skipped": len(skipped),
        "skipped_files": [vars(s) for s in skipped[:100]],
        "policy": result.summary()["policy"],
        "warnings": warnings,
    }
    (run_dir / SUMMARY_FILE).write_text(json.dumps(summary, indent=2) + "\n")
    return PreparedData(table, summary, warnings)


def data_notes(run_dir: Path, summary: dict[str, Any]) -> list[str]:
    """One line per kind of image left out (or relabelled), with its count and the file that
    lists them; kinds with nothing in them, or whose file is missing, are not mentioned."""
    excluded = summary.get("excluded") or {}
    reasons = "; ".join(f"{count} {reason}" for reason, count in excluded.items())
    kinds = [
        (int(summary.get("skipped") or 0), "file(s) skipped as unreadable or unusable",
         SKIPPED_FILE),
        (sum(excluded.values()), f"image(s) excluded ({reasons})", EXCLUDED_FILE),
        (int(summary.get("relabelled") or 0), "image(s) relabelled by their official label",
         RELABELLED_FILE),
    ]
    return [f"{count} {what}: listed in {run_dir / name}"
            for count, what, name in kinds if count and (run_dir / name).exists()]


def read_prepared(run_dir: Path) -> PreparedData:
    """The split and summary an earlier :func:`prepare_data` wrote (resume, DDP workers)."""
    split_path = run_dir / SPLIT_FILE
    if not split_path.exists():
        raise TrainingInputError(
            f"{split_path} is missing: it is written by the first process of a run (multi-node "
            "training needs the run directory on a shared filesystem)"
        )
    table = pd.read_csv(split_path, dtype={"image_id": "object", "group_id": "object"},
                        encoding_errors=NAME_ERRORS)
    summary_path = run_dir / SUMMARY_FILE
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    return PreparedData(table, summary, list(summary.get("warnings", [])))


def _check_classes(images: pd.DataFrame) -> None:
    classes = images["label"].unique()
    if len(classes) < 2:
        raise TrainingInputError(
            f"training needs at least two classes; every image is labelled {classes[0]!r}"
        )


def _check_split(table: pd.DataFrame) -> None:
    train_classes = table.loc[table["split"] == "train", "label"].nunique()
    if train_classes < 2:
        raise TrainingInputError(
            f"after cleaning and splitting, the training split holds {train_classes} class(es); "
            "at least two are needed"
        )
    if not (table["split"] == "val").any():
        raise TrainingInputError("the validation split is empty: add images or raise val_fraction")


def _class_warnings(table: pd.DataFrame, excluded: pd.DataFrame) -> list[str]:
    warnings = []
    for name in taxonomy.CLASSES:
        rows = table[table["label"] == name]
        lost = excluded[excluded["label"] == name] if "label" in excluded else excluded[:0]
        if rows.empty and not lost.empty:
            reasons = "; ".join(sorted(set(lost["reason"])))
            warnings.append(f"class {name!r}: all {len(lost)} image(s) excluded ({reasons})")
        if rows.empty:
            continue
        in_train = int((rows["split"] == "train").sum())
        in_val = int((rows["split"] == "val").sum())
        if in_train == 0:
            warnings.append(f"class {name!r}: no training image ({len(rows)} held out); "
                            "the model cannot learn it")
        elif in_val == 0:
            warnings.append(f"class {name!r}: {in_train} training image(s) and none in "
                            "validation; its validation recall cannot be measured")
        elif in_train < 5:
            warnings.append(f"class {name!r}: only {in_train} training image(s)")
    return warnings


def _counts(table: pd.DataFrame) -> dict[str, dict[str, int]]:
    return {
        str(split): {str(k): int(v) for k, v in rows["label"].value_counts().sort_index().items()}
        for split, rows in table.groupby("split")
    }


def _add_offline_augmentations(
    table: pd.DataFrame,
    config: TrainConfig,
    preprocessing: Preprocessing,
    run_dir: Path,
    show_progress: bool,
) -> tuple[pd.DataFrame, list[Skipped]]:
    """The notebook's rebalancing, after the split: augmented copies of training images only."""
    train = table[table["split"] == "train"]
    loader = ResizedImageLoader(preprocessing, mode="none")
    pipeline = build_train_transform(
        config.augmentation, preprocessing.image_size, seed=config.seed
    )
    extra, skipped = generate_offline_augmentations(
        train,
        run_dir / OFFLINE_DIR,
        per_class=config.balance.offline_per_class,
        transform=partial(augment, pipeline),
        loader=loader,
        seed=config.seed,
        show_progress=show_progress,
    )
    return pd.concat([table, extra], ignore_index=True), skipped
