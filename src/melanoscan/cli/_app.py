"""The Typer app, its consoles, and the options and helpers the commands share."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

from melanoscan import __version__
from melanoscan.data.sources import DataSourceError
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
BackendOpt = Annotated[str, typer.Option(help="auto, onnx or torch.")]


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
    configure_process()  # before any command imports torch


def fail(message: str) -> typer.Exit:
    error_console.print(f"[bold red]error:[/] {message}", highlight=False)
    return typer.Exit(code=2)


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
