"""Readers that turn every supported dataset layout into a :class:`Manifest`.

Supported sources (several may be given at once, see :func:`read_sources`):

* class-folder trees: ``DIR/<class>/*.jpg`` or ``DIR/{Train,Val,Test}/<class>/*.jpg``; folder
  names are matched to the 9 classes case-, space-, hyphen- and underscore-insensitively;
* ISIC challenge ground truth in the one-hot format (``image,MEL,NV,BCC,AKIEC,BKL,DF,VASC``);
* ISIC 2017 Part 3 ground truth (``image_id,melanoma,seborrheic_keratosis``; both 0 = nevus);
* HAM10000 metadata (``lesion_id,image_id,dx,...``); ``lesion_id`` becomes the group id;
* a manifest CSV melanoscan wrote (``melanoscan split --out``, a training run's ``split.csv``),
  given as a file: read as it is, labels and splits included.

For CSV sources, images are looked up by id anywhere under the CSV's own directory (or under
``images_dir`` when given). A directory holding one such CSV is read as that CSV; several CSVs of one format (the ISIC
2017 training and validation ground truth side by side) are read together.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from melanoscan import taxonomy
from melanoscan.data.images import is_image_file
from melanoscan.data.manifest import MANIFEST_COLUMNS, Manifest, Skipped, make_table

SPLIT_FOLDERS: dict[str, str] = {
    "train": "train",
    "training": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "test": "test",
    "testing": "test",
}
ISIC_ID = re.compile(r"ISIC_\d{7}", re.IGNORECASE)
HAM_REQUIRED = ("lesion_id", "image_id", "dx")
ISIC2017_REQUIRED = ("image_id", "melanoma", "seborrheic_keratosis")
ISIC_ONEHOT_CODES = tuple(code.upper() for code in taxonomy.ISIC2018_CODES)


class DataSourceError(Exception):
    """A source that cannot be read at all (missing, empty, unknown layout or columns)."""


def read_sources(paths: Sequence[str | Path]) -> Manifest:
    """Read every source and concatenate them into one manifest (not yet scanned)."""
    if not paths:
        raise DataSourceError("no data source given")
    return Manifest.concat(read_source(path) for path in paths)


def read_source(path: str | Path, *, images_dir: str | Path | None = None) -> Manifest:
    """Read one source, detecting its layout from what is on disk."""
    path = Path(path)
    if not path.exists():
        raise DataSourceError(f"data source not found: {path}")
    if path.is_file():
        if path.suffix.lower() != ".csv":
            raise DataSourceError(
                f"{path} is a file but not a CSV: give a class-folder directory or a "
                "ground-truth / metadata CSV"
            )
        if _is_manifest_csv(path):
            return read_manifest_csv(path)
        return read_csv_source(path, images_dir=images_dir)
    subdirs = _visible_subdirs(path)
    if any(d.name.lower() in SPLIT_FOLDERS for d in subdirs):
        return read_split_tree(path)
    if any(taxonomy.class_from_folder(d.name) for d in subdirs):
        return read_class_folders(path, source=str(path))
    csvs = [c for c in sorted(path.glob("*.csv")) if _csv_kind(c) is not None]
    if len({_csv_kind(c) for c in csvs}) == 1:
        return Manifest.concat(
            read_csv_source(c, images_dir=images_dir, source=str(path)) for c in csvs
        )
    if len(csvs) > 1:
        raise DataSourceError(
            f"{path} holds label CSVs of different formats ({', '.join(c.name for c in csvs)}): "
            "name one"
        )
    names = ", ".join(sorted(d.name for d in subdirs)) or "none"
    raise DataSourceError(
        f"cannot read {path}: expected class folders (DIR/<class>/*.jpg), split folders "
        f"(DIR/Train/<class>/*.jpg) or an ISIC / HAM10000 CSV; found sub-folders: {names}. "
        f"Known classes: {', '.join(taxonomy.CLASSES)}"
    )


def read_split_tree(root: Path) -> Manifest:
    """Read ``ROOT/{Train,Val,Test}/<class>/...``: each split folder is a class-folder tree."""
    parts = []
    for sub in _visible_subdirs(root):
        split = SPLIT_FOLDERS.get(sub.name.lower())
        if split is None:
            raise DataSourceError(
                f"unexpected folder {sub} next to split folders; expected only "
                f"{', '.join(sorted(set(SPLIT_FOLDERS.values())))} (any case)"
            )
        parts.append(read_class_folders(sub, source=str(root), split=split))
    return Manifest.concat(parts)


def read_class_folders(root: Path, *, source: str, split: str | None = None) -> Manifest:
    """Read ``ROOT/<class>/**/*``: the folder name is the label."""
    subdirs = _visible_subdirs(root)
    unknown = [d.name for d in subdirs if taxonomy.class_from_folder(d.name) is None]
    if unknown:
        raise DataSourceError(
            f"{root}: folder(s) {', '.join(map(repr, sorted(unknown)))} are not known classes; "
            f"known: {', '.join(taxonomy.CLASSES)} (case and spaces do not matter)"
        )
    if not subdirs:
        raise DataSourceError(f"{root}: no class folders found")
    rows: list[dict[str, str | None]] = []
    skipped: list[Skipped] = []
    for class_dir in subdirs:
        label = taxonomy.class_from_folder(class_dir.name)
        files = [f for f in sorted(class_dir.rglob("*")) if f.is_file() and not _hidden(f, root)]
        images = [f for f in files if is_image_file(f)]
        skipped += [
            Skipped(str(f.resolve()), source, f"not an image file (suffix {f.suffix or 'none'!r})")
            for f in files
            if not is_image_file(f)
        ]
        if not images:
            raise DataSourceError(f"class folder {class_dir} contains no images")
        rows += [
            {
                "path": str(f.resolve()),
                "label": label,
                "source_label": class_dir.name,
                "taxonomy": taxonomy.ISIC9,
                "source": source,
                "split": split,
                "image_id": _isic_id(f.name),
            }
            for f in images
        ]
    return Manifest(images=make_table(rows), skipped=skipped)


def read_csv_source(
    csv_path: Path, *, images_dir: str | Path | None = None, source: str | None = None
) -> Manifest:
    """Read an ISIC one-hot ground-truth CSV or a HAM10000 metadata CSV."""
    kind = _csv_kind(csv_path)
    if kind is None:
        header = _csv_header(csv_path)
        raise DataSourceError(
            f"{csv_path}: unknown CSV columns {header}; expected the ISIC one-hot format "
            f"(image,{','.join(ISIC_ONEHOT_CODES)}), ISIC 2017 Part 3 "
            f"({','.join(ISIC2017_REQUIRED)}) or HAM10000 metadata ({','.join(HAM_REQUIRED)},...)"
        )
    index = _image_index(Path(images_dir) if images_dir else csv_path.parent)
    source = source or str(csv_path)
    with csv_path.open(newline="", encoding="utf-8-sig") as handle:
        records = list(csv.DictReader(handle))
    if not records:
        raise DataSourceError(f"{csv_path}: the CSV has a header but no rows")
    rows, skipped = _read_csv_rows(kind, records, index, source, csv_path)
    if not rows:
        raise DataSourceError(
            f"{csv_path}: none of its {len(records)} rows has a usable image "
            f"(first reason: {skipped[0].reason if skipped else 'unknown'})"
        )
    return Manifest(images=make_table(rows), skipped=skipped)


RowFields = tuple[str, str, str, dict[str, str | None]]
"""What a CSV row says: (9-class label, label as written, taxonomy, extra manifest columns)."""


def _ham_fields(record: dict[str, str], csv_path: Path) -> RowFields:
    code = (record.get("dx") or "").strip().lower()
    if code not in taxonomy.FROM_ISIC2018:
        raise ValueError(f"unknown dx code {code!r}")
    group = (record.get("lesion_id") or "").strip() or None
    return taxonomy.from_isic2018(code), code, taxonomy.ISIC2018, {"group_id": group,
                                                                   "split": None}


def _onehot_fields(record: dict[str, str], csv_path: Path) -> RowFields:
    try:
        hot = [code for code in ISIC_ONEHOT_CODES if float(record.get(code) or 0) >= 0.5]
    except ValueError:
        raise ValueError("non-numeric value in a class column") from None
    if len(hot) != 1:
        raise ValueError(f"one-hot row has {len(hot)} positive classes")
    code = hot[0].lower()
    split = "test" if "test" in csv_path.name.lower() else None
    return taxonomy.from_isic2018(code), code, taxonomy.ISIC2018, {"split": split}


def _isic2017_fields(record: dict[str, str], csv_path: Path) -> RowFields:
    try:
        melanoma, keratosis = (float(record.get(c) or 0) >= 0.5 for c in ISIC2017_REQUIRED[1:])
    except ValueError:
        raise ValueError("non-numeric value in a class column") from None
    if melanoma and keratosis:
        raise ValueError("row says both melanoma and seborrheic keratosis")
    label = "melanoma" if melanoma else "seborrheic_keratosis" if keratosis else "nevus"
    written = "melanoma" if melanoma else "seborrheic_keratosis" if keratosis else "neither (nevus)"
    # The 2017 "Validation" set is only 148 images: its rows are training candidates like the
    # rest, so validation is drawn across every source. Only a test file is held out.
    split = "test" if "test" in csv_path.name.lower() else None
    return label, written, taxonomy.ISIC2017, {"split": split}


_CSV_FORMATS = {
    "ham": ("image_id", _ham_fields),
    "onehot": ("image", _onehot_fields),
    "isic2017": ("image_id", _isic2017_fields),
}


def _read_csv_rows(
    kind: str,
    records: list[dict[str, str]],
    index: dict[str, Path],
    source: str,
    csv_path: Path,
) -> tuple[list[dict[str, str | None]], list[Skipped]]:
    id_column, parse = _CSV_FORMATS[kind]
    rows: list[dict[str, str | None]] = []
    skipped: list[Skipped] = []
    for number, record in enumerate(records, start=2):
        image_id = (record.get(id_column) or "").strip()
        where = f"{csv_path}:{number} ({image_id or 'no ' + id_column})"
        try:
            label, written, label_taxonomy, extra = parse(record, csv_path)
        except ValueError as exc:
            skipped.append(Skipped(where, source, str(exc)))
            continue
        image = index.get(image_id.lower())
        if image is None:
            skipped.append(Skipped(where, source, "image listed in CSV not found"))
            continue
        rows.append(
            {
                "path": str(image),
                "label": label,
                "source_label": written,
                "taxonomy": label_taxonomy,
                "source": source,
                "image_id": _isic_id(image_id),
                **extra,
            }
        )
    return rows, skipped


def _csv_header(csv_path: Path) -> list[str]:
    with csv_path.open(newline="", encoding="utf-8-sig") as handle:
        return [c.strip() for c in next(csv.reader(handle), [])]


def read_manifest_csv(csv_path: Path) -> Manifest:
    """Read a manifest melanoscan wrote (``split --out``, a run's ``split.csv``) as it is.

    Labels, splits and groups are kept; relative paths are taken from the working directory,
    or else from the CSV's folder.
    """
    try:
        table = pd.read_csv(csv_path, dtype=str, keep_default_na=False, na_values=[""])
    except (OSError, pd.errors.ParserError) as exc:
        raise DataSourceError(f"{csv_path}: cannot read the manifest: {exc}") from None
    unknown = sorted(set(table["label"].dropna()) - set(taxonomy.CLASSES))
    if unknown:
        raise DataSourceError(f"{csv_path}: unknown labels {unknown}")
    if table.empty:
        raise DataSourceError(f"{csv_path}: the manifest has no rows")

    def locate(path: str) -> str:
        candidate = Path(path)
        if candidate.is_absolute() or candidate.exists():
            return path
        beside = csv_path.parent / candidate
        return str(beside) if beside.exists() else path

    table["path"] = table["path"].map(locate)
    return Manifest(images=make_table(table[list(MANIFEST_COLUMNS)].to_dict("records")))


def _is_manifest_csv(csv_path: Path) -> bool:
    return all(column in _csv_header(csv_path) for column in MANIFEST_COLUMNS)


def _csv_kind(csv_path: Path) -> str | None:
    header = _csv_header(csv_path)
    if all(column in header for column in HAM_REQUIRED):
        return "ham"
    if "image" in header and all(code in header for code in ISIC_ONEHOT_CODES):
        return "onehot"
    if all(column in header for column in ISIC2017_REQUIRED):
        return "isic2017"
    return None


def _image_index(root: Path) -> dict[str, Path]:
    """Map lower-cased file stems to image paths under ``root`` (recursive)."""
    if not root.is_dir():
        raise DataSourceError(f"image folder not found: {root}")
    return {
        f.stem.lower(): f.resolve()
        for f in sorted(root.rglob("*"))
        if f.is_file() and is_image_file(f) and not _hidden(f, root)
    }


def _visible_subdirs(root: Path) -> list[Path]:
    return sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))


def _hidden(path: Path, root: Path) -> bool:
    return any(part.startswith(".") for part in path.relative_to(root).parts)


def _isic_id(name: str) -> str | None:
    match = ISIC_ID.search(name)
    return "ISIC_" + match.group(0)[5:] if match else None
