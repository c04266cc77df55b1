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
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["NAME_ERRORS", "atomic_write", "printable", "write_csv", "write_text"]

NAME_ERRORS = "surrogateescape"
"""The UTF-8 error handler that maps undecodable bytes of file names to and from str."""


def atomic_write(target: Path, write: Callable[[Path], object]) -> None:
    """Call ``write(tmp)`` on a temporary file next to ``target``, then move it into place."""
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


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
