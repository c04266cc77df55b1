r"""Writing output files: atomically, and whatever bytes the file names in them hold.

On Linux a file name is bytes; one that is not UTF-8 (``lesion_\xff.jpg``) reaches Python as a
str holding a lone surrogate (PEP 383), which strict UTF-8 cannot encode. melanoscan writes such
names so that nothing is lost and nothing crashes:

* CSV files (manifests, skipped lists, predictions) and CSV/JSON on stdout keep the name's
  original bytes (``surrogateescape``): a path read back names the same file, and
  :data:`NAME_ERRORS` is how melanoscan reads its own CSVs;
* JSON escapes them (``"lesion_\udcff.jpg"``; Python's ``json`` reads that back unchanged);
* what people read (HTML reports) shows them backslash-escaped, as :func:`printable` does
  (``lesion_\xff.jpg``, like ``ls -b``).

Every file is written to a temporary name and moved into place, so an interrupted or failed
write never leaves a cut-off file.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "NAME_ERRORS",
    "atomic_write",
    "printable",
    "staged_directory",
    "write_csv",
    "write_text",
]

NAME_ERRORS = "surrogateescape"
"""The UTF-8 error handler that maps undecodable bytes of file names to and from str."""


def atomic_write(target: Path, write: Callable[[Path], object]) -> None:
    """Call ``write(tmp)`` on a temporary file next to ``target``, sync it, move it into place.

    ``target`` is either its old self or complete: a failed write (a full disk) only removes
    the temporary file and re-raises.
    """
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        _fsync(tmp)  # a full disk can surface only here (delayed allocation)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    _fsync(target.parent)  # the rename itself


@contextmanager
def staged_directory(target: Path) -> Iterator[Path]:
    """A fresh folder beside ``target`` to fill; it replaces ``target`` once the block succeeds.

    If the block fails the folder is removed and ``target`` is left as it was, so a reader
    never sees a half-written (or empty) directory.
    """
    target = Path(target)
    staging = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        yield staging
        _fsync(staging)
        old = target.with_name(f".{target.name}.{os.getpid()}.old")
        if target.exists():
            os.replace(target, old)
        try:
            os.replace(staging, target)
        except OSError:
            if old.exists():
                os.replace(old, target)
            raise
        shutil.rmtree(old, ignore_errors=True)
        _fsync(target.parent)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _fsync(path: Path) -> None:
    """Flush a file's (or a directory's entries') data to disk."""
    if path.is_dir() and os.name == "nt":
        return  # Windows cannot open a directory for syncing
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def printable(text: str) -> str:
    r"""``text`` with the undecodable bytes of file names backslash-escaped (``\xff``)."""
    return text.encode("utf-8", NAME_ERRORS).decode("utf-8", "backslashreplace")


def write_text(path: Path, text: str) -> Path:
    """Write ``text`` as UTF-8 (file-name bytes kept as they are), atomically."""
    data = text.encode("utf-8", NAME_ERRORS)
    atomic_write(path, lambda tmp: tmp.write_bytes(data))
    return path


def write_csv(table: pd.DataFrame, path: Path) -> Path:
    """Write ``table`` (no index) as a UTF-8 CSV (file-name bytes kept), atomically."""
    atomic_write(path, lambda tmp: table.to_csv(tmp, index=False, errors=NAME_ERRORS))
    return path
