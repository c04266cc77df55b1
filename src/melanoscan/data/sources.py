"""Readers that turn every supported dataset layout into a :class:`Manifest`.

Supported sources (several may be given at once, see :func:`read_sources`):

* class-folder trees: ``DIR/<class>/*.jpg`` or ``DIR/{Train,Val,Test}/<class>/*.jpg``; folder
  names are matched to the 9 classes case-, space-, hyphen- and underscore-insensitively;
* ISIC challenge ground truth, one format per challenge (``taxonomy`` in brackets):

  - ISIC 2016 Part 3 (``isic2016``): ``image id, benign|malignant`` (or ``0|1``), with or
    without a header; malignant is melanoma, and a benign row is skipped with its reason
    (benign names none of the 9 classes);
  - ISIC 2017 Part 3 (``isic2017``): ``image_id,melanoma,seborrheic_keratosis``; both 0 = nevus;
  - ISIC 2018 Task 3 (``isic2018``): one-hot ``image,MEL,NV,BCC,AKIEC,BKL,DF,VASC``;
  - ISIC 2019 (``isic2019``): one-hot ``image,MEL,NV,BCC,AK,BKL,DF,VASC,SCC[,UNK]``; ``UNK``
    rows are skipped with their reason;
  - ISIC 2020 (``isic2020``): ``image_name,patient_id,...,diagnosis,...``; the diagnoses that
    name one of the 9 classes are read (:data:`melanoscan.taxonomy.FROM_ISIC2020`), the others
    skipped with the diagnosis as the reason; ``patient_id`` becomes the group id;

* HAM10000 metadata (``isic2018``: ``lesion_id,image_id,dx,...``); ``lesion_id`` becomes the
  group id, so two metadata folders of one collection (HAM10000 split in two) link their images;
* a manifest CSV melanoscan wrote (``melanoscan split --out``, a training run's ``split.csv``),
  given as a file: read as it is, labels and splits included.

For CSV sources, images are looked up by id anywhere under the CSV's own directory (or under
``images_dir`` when given). A directory holding one such CSV is read as that CSV; several CSVs
of one format (the ISIC 2017 training and validation ground truth side by side) are read
together. A CSV whose name contains ``test`` gives its rows the ``test`` split. Every row that
is not read is listed in :attr:`Manifest.skipped` with its reason. Ground-truth and metadata
CSVs must be UTF-8 text (a Latin-1 or binary file is a :class:`DataSourceError` naming it).
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from melanoscan import taxonomy
from melanoscan.data.folders import Unlisted, list_files
from melanoscan.data.images import is_image_file
from melanoscan.data.manifest import MANIFEST_COLUMNS, Manifest, Skipped, make_table
from melanoscan.files import NAME_ERRORS

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
ISIC2019_CODES = tuple(code.upper() for code in taxonomy.ISIC2019_CODES)
ISIC2020_REQUIRED = ("image_name", "patient_id", "diagnosis")
ISIC2016_VALUES: dict[str, bool] = {
    "benign": False, "malignant": True, "0": False, "1": True, "0.0": False, "1.0": True,
}
"""ISIC 2016 Part 3 ground-truth values, lower-cased: whether the lesion is malignant."""
HOLDOUT_SPLIT = "holdout"
"""The split of every row of a held-out source (:func:`read_sources` ``holdout``)."""


class DataSourceError(Exception):
    """A source that cannot be read at all (missing, empty, unknown layout or columns)."""


def read_sources(
    paths: Sequence[str | Path], *, holdout: Sequence[str | Path] = ()
) -> Manifest:
    """Read every source and concatenate them into one manifest (not yet scanned).

    Args:
        paths: the sources.
        holdout: further sources whose rows all get the :data:`HOLDOUT_SPLIT` split, whatever
            split they had: an evaluation split that a cleaning policy listing it keeps every
            copy, lesion and near duplicate of out of training (leave-one-source-out).
    """
    if not paths:
        raise DataSourceError("no data source given")
    manifest = Manifest.concat(read_source(path) for path in paths)
    if not holdout:
        return manifest
    held = Manifest.concat(read_source(path) for path in holdout)
    held.images["split"] = HOLDOUT_SPLIT
    return Manifest.concat([manifest, held])


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
    csvs = [c for c in sorted(path.glob("*.csv")) if _csv_kind(c) is not None]
    split_dirs = [d for d in subdirs if d.name.lower() in SPLIT_FOLDERS]
    # A ground-truth CSV next to a plain image folder named like a split (ISIC 2020's train/)
    # is a CSV source; split folders holding class folders are a split tree.
    if split_dirs and (not csvs or any(_holds_class_folders(d) for d in split_dirs)):
        return read_split_tree(path)
    if any(taxonomy.class_from_folder(d.name) for d in subdirs):
        return read_class_folders(path, source=str(path))
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
        listing = list_files(class_dir, skip_hidden=True)
        images = [f for f in listing.files if is_image_file(f)]
        skipped += [
            Skipped(str(f.resolve()), source, f"not an image file (suffix {f.suffix or 'none'!r})")
            for f in listing.files
            if not is_image_file(f)
        ]
        skipped += [_skipped(entry, source) for entry in listing.unlisted]
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
    """Read an ISIC challenge ground-truth CSV or a HAM10000 metadata CSV (module docstring)."""
    kind = _csv_kind(csv_path)
    if kind is None:
        header = _csv_header(csv_path)
        raise DataSourceError(
            f"{csv_path}: unknown CSV columns {header}; expected ISIC 2016 Part 3 "
            "(image id,benign|malignant), ISIC 2017 Part 3 "
            f"({','.join(ISIC2017_REQUIRED)}), the ISIC 2018 one-hot format "
            f"(image,{','.join(ISIC_ONEHOT_CODES)}), ISIC 2019 (image,{','.join(ISIC2019_CODES)}"
            f",UNK), ISIC 2020 ({','.join(ISIC2020_REQUIRED)},...) or HAM10000 metadata "
            f"({','.join(HAM_REQUIRED)},...)"
        )
    index, unlisted = _image_index(Path(images_dir) if images_dir else csv_path.parent)
    source = source or str(csv_path)
    records, first_line = _csv_records(csv_path, kind)
    if not records:
        raise DataSourceError(f"{csv_path}: the CSV has a header but no rows")
    rows, skipped = _read_csv_rows(kind, records, first_line, index, source, csv_path)
    skipped += [_skipped(entry, source) for entry in unlisted]
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


def _split_of(csv_path: Path) -> str | None:
    return "test" if "test" in csv_path.name.lower() else None


def _hot_column(record: dict[str, str], codes: Sequence[str]) -> str:
    """The one column of ``codes`` set to 1 in a one-hot row (lower-cased)."""
    try:
        hot = [code for code in codes if float(record.get(code) or 0) >= 0.5]
    except ValueError:
        raise ValueError("non-numeric value in a class column") from None
    if len(hot) != 1:
        raise ValueError(f"one-hot row has {len(hot)} positive classes")
    return hot[0].lower()


def _onehot_fields(record: dict[str, str], csv_path: Path) -> RowFields:
    code = _hot_column(record, ISIC_ONEHOT_CODES)
    return taxonomy.from_isic2018(code), code, taxonomy.ISIC2018, {"split": _split_of(csv_path)}


def _isic2019_fields(record: dict[str, str], csv_path: Path) -> RowFields:
    code = _hot_column(record, (*ISIC2019_CODES, "UNK"))
    if code == "unk":
        raise ValueError("ISIC 2019 UNK (none of the other diagnoses): not among the 9 classes")
    label = taxonomy.FROM_ISIC2019[code]
    return label, code, taxonomy.ISIC2019, {"split": _split_of(csv_path)}


def _isic2020_fields(record: dict[str, str], csv_path: Path) -> RowFields:
    written = (record.get("diagnosis") or "").strip()
    label = taxonomy.FROM_ISIC2020.get(taxonomy.normalise_name(written))
    if label is None:
        raise ValueError(f"ISIC 2020 diagnosis {written!r}: not among the 9 classes")
    target = (record.get("target") or "").strip()
    if target in ("0", "1") and (target == "1") != (label == taxonomy.MELANOMA):
        raise ValueError(f"ISIC 2020 target {target} contradicts the diagnosis {written!r}")
    group = (record.get("patient_id") or "").strip() or None
    return label, written, taxonomy.ISIC2020, {"group_id": group, "split": _split_of(csv_path)}


def _isic2016_fields(record: dict[str, str], csv_path: Path) -> RowFields:
    written = (record.get("benign_malignant") or "").strip()
    malignant = ISIC2016_VALUES.get(written.lower())
    if malignant is None:
        raise ValueError(f"ISIC 2016 value {written!r} is neither benign nor malignant (0/1)")
    if not malignant:
        raise ValueError("ISIC 2016 benign: no diagnosis among the 9 classes")
    return taxonomy.MELANOMA, written, taxonomy.ISIC2016, {"split": _split_of(csv_path)}


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
    return label, written, taxonomy.ISIC2017, {"split": _split_of(csv_path)}


_CSV_FORMATS = {
    "ham": ("image_id", _ham_fields),
    "onehot": ("image", _onehot_fields),
    "isic2017": ("image_id", _isic2017_fields),
    "isic2019": ("image", _isic2019_fields),
    "isic2020": ("image_name", _isic2020_fields),
    "isic2016": ("image_id", _isic2016_fields),
}


def _read_csv_rows(
    kind: str,
    records: list[dict[str, str]],
    first_line: int,
    index: dict[str, Path],
    source: str,
    csv_path: Path,
) -> tuple[list[dict[str, str | None]], list[Skipped]]:
    id_column, parse = _CSV_FORMATS[kind]
    rows: list[dict[str, str | None]] = []
    skipped: list[Skipped] = []
    for number, record in enumerate(records, start=first_line):
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
    # Only the first line: a manifest melanoscan wrote may hold file names that are not UTF-8.
    try:
        with csv_path.open("rb") as handle:
            line = handle.readline(1 << 16).decode("utf-8-sig")
    except OSError as exc:
        raise DataSourceError(f"cannot read {csv_path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise _not_utf8(csv_path, exc) from None
    return [c.strip() for c in next(csv.reader([line]), [])]


def _csv_text(csv_path: Path) -> io.StringIO:
    """The whole CSV as text, or a clear error when it is not UTF-8."""
    try:
        return io.StringIO(csv_path.read_text(encoding="utf-8-sig"), newline="")
    except OSError as exc:
        raise DataSourceError(f"cannot read {csv_path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise _not_utf8(csv_path, exc) from None


def _not_utf8(csv_path: Path, exc: UnicodeDecodeError) -> DataSourceError:
    byte = exc.object[exc.start : exc.start + 1].hex()
    return DataSourceError(
        f"{csv_path} is not UTF-8 text (byte 0x{byte} cannot be decoded): is it a CSV? "
        "Save it as UTF-8 (e.g. 'iconv -f latin1 -t utf-8')"
    )


def _csv_records(csv_path: Path, kind: str) -> tuple[list[dict[str, str]], int]:
    """The CSV's rows as dicts, and the line number of the first one."""
    handle = _csv_text(csv_path)
    if kind != "isic2016":
        return list(csv.DictReader(handle)), 2
    rows = list(csv.reader(handle))
    # ISIC 2016 files come with or without a header, whose column names vary: name them here.
    header = 1 if rows and not _has_isic_id(rows[0]) else 0
    records = [
        {"image_id": row[0], "benign_malignant": row[1] if len(row) > 1 else ""}
        for row in rows[header:]
    ]
    return records, 1 + header


def _has_isic_id(row: list[str]) -> bool:
    return bool(row) and ISIC_ID.search(row[0]) is not None


def _looks_like_isic2016(csv_path: Path, sample: int = 20) -> bool:
    """Two columns, ISIC ids and (mostly) benign/malignant or 0/1, after an optional header.

    A few unreadable values do not change the format: those rows are skipped with a reason.
    """
    reader = csv.reader(_csv_text(csv_path))
    rows = [row for _, row in zip(range(sample), reader, strict=False) if row]
    if rows and not _has_isic_id(rows[0]):
        rows = rows[1:]
    valid = [row[1].strip().lower() in ISIC2016_VALUES for row in rows if len(row) == 2]
    return (
        bool(rows)
        and all(len(row) == 2 and _has_isic_id(row) for row in rows)
        and sum(valid) > len(rows) / 2
    )


def read_manifest_csv(csv_path: Path) -> Manifest:
    """Read a manifest melanoscan wrote (``split --out``, a run's ``split.csv``) as it is.

    Labels, splits and groups are kept; relative paths are taken from the working directory,
    or else from the CSV's folder. File names that are not UTF-8 are read as the bytes they
    were written as (:mod:`melanoscan.files`).
    """
    try:
        table = pd.read_csv(csv_path, dtype=str, keep_default_na=False, na_values=[""],
                            encoding_errors=NAME_ERRORS)
    except (OSError, ValueError) as exc:  # pandas' ParserError is a ValueError
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataSourceError(f"{csv_path}: cannot read the manifest: {first_line}") from None
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
    if all(column in header for column in ISIC2020_REQUIRED):
        return "isic2020"
    # 2019 before 2018: its AK and SCC columns replace AKIEC, and AK alone is not AKIEC.
    if "image" in header and all(code in header for code in ISIC2019_CODES):
        return "isic2019"
    if "image" in header and all(code in header for code in ISIC_ONEHOT_CODES):
        return "onehot"
    if all(column in header for column in ISIC2017_REQUIRED):
        return "isic2017"
    if _looks_like_isic2016(csv_path):
        return "isic2016"
    return None


def _image_index(root: Path) -> tuple[dict[str, Path], list[Unlisted]]:
    """Map lower-cased file stems to image paths under ``root`` (recursive).

    Also returns the unreadable folders and the image-named entries that are no usable file
    (broken links, link loops).
    """
    if not root.is_dir():
        raise DataSourceError(f"image folder not found: {root}")
    listing = list_files(root, skip_hidden=True)
    index = {f.stem.lower(): f.resolve() for f in listing.files if is_image_file(f)}
    return index, [u for u in listing.unlisted if u.folder or is_image_file(u.path)]


def _skipped(entry: Unlisted, source: str) -> Skipped:
    # absolute(), not resolve(): resolving a link loop raises.
    return Skipped(str(entry.path.absolute()), source, entry.reason)


def _holds_class_folders(root: Path) -> bool:
    return any(taxonomy.class_from_folder(d.name) for d in _visible_subdirs(root))


def _visible_subdirs(root: Path) -> list[Path]:
    return sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))


def _isic_id(name: str) -> str | None:
    match = ISIC_ID.search(name)
    return "ISIC_" + match.group(0)[5:] if match else None
