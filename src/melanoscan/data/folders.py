"""List the files below a folder, reporting what cannot be listed instead of dropping it.

``Path.rglob`` skips unreadable folders without a word, and a broken symbolic link or a link
loop is no file to it: :func:`list_files` returns those too, with the reason, so every command
lists them as skipped. Links to folders are not followed (as with ``rglob``), and reported.
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Listing", "Unlisted", "file_problem", "list_files"]


@dataclass(frozen=True)
class Unlisted:
    """A folder entry that is not a usable file, and why.

    Args:
        path: the entry (absolute when the listed folder was).
        reason: why it is not listed, for people.
        folder: it is a folder (unreadable, or a link to one), not a file.
    """

    path: Path
    reason: str
    folder: bool = False


@dataclass
class Listing:
    """The regular files found below a folder (sorted), and the entries that are not."""

    files: list[Path] = field(default_factory=list)
    unlisted: list[Unlisted] = field(default_factory=list)


def file_problem(path: Path) -> str | None:
    """Why ``path`` is not a readable regular file, or ``None`` when it is one."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return "broken symbolic link (its target is missing)" if path.is_symlink() else (
            "file not found")
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "symbolic link loop (the link leads back to itself)"
        return f"cannot read: {exc.strerror or exc}"
    if stat.S_ISDIR(mode):
        return "a folder, not a file"
    if not stat.S_ISREG(mode):
        return "not a regular file"
    return None


def list_files(root: Path, *, skip_hidden: bool = False) -> Listing:
    """Every regular file below ``root`` (recursive, sorted), and what could not be used.

    Args:
        root: the folder.
        skip_hidden: leave out files and folders whose name starts with a dot (not reported).
    """
    listing = Listing()

    def unreadable(error: OSError) -> None:
        reason = f"folder cannot be read: {error.strerror or error}"
        listing.unlisted.append(Unlisted(Path(error.filename or root), reason, folder=True))

    for folder, dirs, names in os.walk(root, onerror=unreadable):
        here = Path(folder)
        if skip_hidden:
            dirs[:] = [d for d in dirs if not d.startswith(".")]
            names = [n for n in names if not n.startswith(".")]
        dirs.sort()
        for name in dirs:
            if (here / name).is_symlink():
                listing.unlisted.append(
                    Unlisted(here / name, "symbolic link to a folder (not followed)", folder=True)
                )
        for name in sorted(names):
            path = here / name
            problem = file_problem(path)
            if problem is None:
                listing.files.append(path)
            else:
                listing.unlisted.append(Unlisted(path, problem))
    listing.files.sort()
    return listing
