"""The Typer app, its consoles, and the options and helpers the commands share."""

from __future__ import annotations

import io
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

from melanoscan import __version__
from melanoscan.data.sources import DataSourceError
from melanoscan.files import NAME_ERRORS
from melanoscan.process import configure_process

if TYPE_CHECKING:
    from melanoscan.data.manifest import Manifest

app = typer.Typer(
    name="melanoscan",
    help="Melanoma detection in dermoscopy images: audit, split, train, evaluate, predict.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()
error_console = Console(stderr=True)

DataArg = Annotated[
    list[Path],
    typer.Argument(
        help="Data sources: class-folder trees (DIR/<class>/ or DIR/{Train,Test}/<class>/), "
        "ISIC 2016-2020 challenge ground-truth CSVs or HAM10000 metadata CSVs (or folders "
        "holding them).",
        show_default=False,
    ),
]
WorkersOpt = Annotated[
    int | None, typer.Option(help="Decoding processes (default: CPU count, at most 8).")
]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")]
ModelOpt = Annotated[
    Path | None,
    typer.Option("--model", help="Model bundle directory (default: the model shipped inside)."),
]
BackendOpt = Annotated[
    str,
    typer.Option(help="auto (int8 model when it passed its parity check, else fp32 ONNX, else "
                 "torch), onnx, onnx-int8 or torch."),
]


def _version(value: bool) -> None:
    if value:
        console.print(f"melanoscan {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    """melanoscan: research tool for dermoscopy images. Not a medical device."""
    # A file name that is not UTF-8 goes to stdout as its original bytes (as ls prints it),
    # whatever the locale; strict encoding would end the command (melanoscan.files).
    if isinstance(sys.stdout, io.TextIOWrapper):
        sys.stdout.reconfigure(errors=NAME_ERRORS)
    configure_process()  # before any command imports torch


def fail(message: str) -> typer.Exit:
    error_console.print(f"[bold red]error:[/] {message}", highlight=False)
    return typer.Exit(code=2)


def output_file(path: Path, option: str) -> Path:
    """Check, before any work, that ``path`` can be written as a file; create its folder."""
    if path.is_dir():
        raise fail(f"{option} {path} is a folder; give a file name")
    _make_folder(path.parent, option, path)
    return path


def output_folder(path: Path, option: str) -> Path:
    """Check, before any work, that files can be written into folder ``path``; create it."""
    if path.exists() and not path.is_dir():
        raise fail(f"{option} {path} is a file, not a folder")
    _make_folder(path, option, path)
    return path


def _make_folder(folder: Path, option: str, path: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        blocking = next((p for p in (folder, *folder.parents) if p.is_file()), folder)
        raise fail(f"{option} {path}: {blocking} is a file, not a folder") from None
    except OSError as exc:
        raise fail(f"{option} {path}: cannot create {folder}: {exc.strerror or exc}") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise fail(f"{option} {path}: cannot write in {folder} (permission denied)")


@contextmanager
def writing(path: Path) -> Iterator[None]:
    """Turn an error while writing ``path`` (disk full, permissions) into a one-line failure."""
    try:
        yield
    except OSError as exc:
        raise fail(f"cannot write {exc.filename or path}: {exc.strerror or exc}") from None


def read_and_scan(
    data: list[Path], workers: int | None, quiet: bool, holdout: list[Path] | None = None
) -> Manifest:
    from melanoscan.data.manifest import scan
    from melanoscan.data.sources import read_sources

    try:
        manifest = read_sources(data, holdout=holdout or ())
    except DataSourceError as exc:
        raise fail(str(exc)) from None
    return scan(manifest, workers=workers, show_progress=not quiet)
