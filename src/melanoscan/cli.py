"""The ``melanoscan`` command line: parse, call one library function, render.

Exit codes: 0 success; 2 bad input (missing or unreadable data source, bad option).
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

from melanoscan import __version__
from melanoscan.data.duplicates import NEAR_DUPLICATE_MAX_DISTANCE
from melanoscan.data.sources import DataSourceError

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
        "ISIC one-hot ground-truth CSVs or HAM10000 metadata CSVs (or folders holding one).",
        show_default=False,
    ),
]
WorkersOpt = Annotated[
    int | None, typer.Option(help="Decoding processes (default: CPU count, at most 8).")
]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")]


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


def _fail(message: str) -> typer.Exit:
    error_console.print(f"[bold red]error:[/] {message}", highlight=False)
    return typer.Exit(code=2)


def _read_and_scan(data: list[Path], workers: int | None, quiet: bool) -> Manifest:
    from melanoscan.data.manifest import scan
    from melanoscan.data.sources import read_sources

    try:
        manifest = read_sources(data)
    except DataSourceError as exc:
        raise _fail(str(exc)) from None
    return scan(manifest, workers=workers, show_progress=not quiet)


@app.command()
def audit(
    data: DataArg,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the report as JSON on stdout (docs/AUDIT.md).")
    ] = False,
    out: Annotated[
        Path | None, typer.Option(help="Also write report.json, report.html and plots here.")
    ] = None,
    near_distance: Annotated[
        int, typer.Option(min=0, max=32, help="pHash distance (of 64 bits) for near duplicates.")
    ] = NEAR_DUPLICATE_MAX_DISTANCE,
    workers: WorkersOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Audit datasets: class balance, duplicates, leaks between splits, label conflicts."""
    from melanoscan.data.audit import audit as run_audit
    from melanoscan.data.audit_report import print_summary, write_report

    manifest = _read_and_scan(data, workers, quiet)
    if len(manifest) == 0:
        raise _fail("no readable image in the given sources")
    report = run_audit(manifest, sources=[str(d) for d in data], near_max_distance=near_distance)
    if as_json:
        sys.stdout.write(json.dumps(report.to_dict(), indent=2) + "\n")
    else:
        print_summary(report, console)
    if out is not None:
        files = write_report(report, manifest.images, out)
        error_console.print(f"Wrote {', '.join(str(f) for f in files)}")


@app.command()
def split(
    data: DataArg,
    out: Annotated[Path, typer.Option(help="CSV to write: the manifest with its split column.")],
    val_fraction: Annotated[
        float, typer.Option(min=0.01, max=0.99, help="Share of training candidates for val.")
    ] = 0.2,
    folds: Annotated[
        int | None, typer.Option(min=2, help="Make k folds (a 'fold' column) instead.")
    ] = None,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    keep_conflicts: Annotated[
        bool, typer.Option(help="Keep images with conflicting labels in training.")
    ] = False,
    keep_eval_overlap: Annotated[
        bool, typer.Option(help="Keep training images that also appear in an eval split.")
    ] = False,
    group_near_duplicates: Annotated[
        bool, typer.Option(help="Keep near duplicates (pHash) on the same side of a split.")
    ] = True,
    workers: WorkersOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Make leak-free stratified splits; write the split manifest and the exclusions."""
    from melanoscan.data.splits import CleaningPolicy, kfold_split, train_val_split

    manifest = _read_and_scan(data, workers, quiet)
    policy = CleaningPolicy(
        exclude_label_conflicts=not keep_conflicts,
        exclude_eval_overlap=not keep_eval_overlap,
        group_near_duplicates=group_near_duplicates,
    )
    try:
        if folds:
            result = kfold_split(manifest.images, k=folds, seed=seed, policy=policy)
        else:
            result = train_val_split(
                manifest.images, val_fraction=val_fraction, seed=seed, policy=policy
            )
    except ValueError as exc:
        raise _fail(str(exc)) from None
    out.parent.mkdir(parents=True, exist_ok=True)
    result.table.to_csv(out, index=False)
    excluded_path = out.with_name(out.stem + ".excluded.csv")
    result.excluded.to_csv(excluded_path, index=False)
    skipped_path = out.with_name(out.stem + ".skipped.csv")
    manifest.skipped_table().to_csv(skipped_path, index=False)
    summary = result.summary()
    summary["skipped"] = len(manifest.skipped)
    console.print_json(json.dumps(summary))
    error_console.print(f"Wrote {out}, {excluded_path}, {skipped_path}")


@app.command()
def train(
    out: Annotated[Path, typer.Option(help="Run directory: config, metrics, plots, bundle.")],
    data: Annotated[
        list[Path] | None,
        typer.Option(help="Data source (repeat for several); see 'audit --help' for formats."),
    ] = None,
    config: Annotated[
        Path | None, typer.Option(help="YAML config (see configs/); options below override it.")
    ] = None,
    overrides: Annotated[
        list[str] | None,
        typer.Option("--set", help="Override any config key: --set optim.lr=3e-4 (repeatable)."),
    ] = None,
    model: Annotated[str | None, typer.Option(help="Model name (model.name).")] = None,
    pretrained: Annotated[
        bool | None, typer.Option(help="Start from ImageNet weights (model.pretrained).")
    ] = None,
    image_size: Annotated[int | None, typer.Option(help="Input side in pixels.")] = None,
    epochs: Annotated[int | None, typer.Option(help="Most epochs.")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Images per step and process.")] = None,
    balance: Annotated[
        str | None, typer.Option(help="sampler | weighted_loss | offline | none.")
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed.")] = None,
    devices: Annotated[int | None, typer.Option(help="Devices per node (>1: DDP).")] = None,
    num_nodes: Annotated[int | None, typer.Option(help="Nodes (>1: DDP across nodes).")] = None,
    resume: Annotated[
        bool, typer.Option(help="Continue the run in --out from its last checkpoint.")
    ] = False,
    quiet: QuietOpt = False,
) -> None:
    """Train a model on leak-free splits and write a model bundle into OUT/bundle.

    Exit codes: 0 done; 1 training failed (e.g. disk full; resume later); 2 bad data or config;
    130 interrupted (resume with --resume).
    """
    from melanoscan.training.config import (
        ConfigError,
        apply_overrides,
        load_config,
        parse_override,
    )
    from melanoscan.training.run import TrainingError, TrainingInputError, TrainingInterrupted
    from melanoscan.training.run import train as run_training

    named = {
        "model.name": model, "model.pretrained": pretrained, "model.image_size": image_size,
        "epochs": epochs, "batch_size": batch_size, "balance.strategy": balance, "seed": seed,
        "devices": devices, "num_nodes": num_nodes,
    }
    chosen = {k: v for k, v in named.items() if v is not None}
    try:
        pairs = dict(parse_override(text) for text in overrides or [])
        if resume and (config or chosen or pairs):
            raise ConfigError("--resume continues with the run's saved config; drop the options")
        resolved = None if resume else apply_overrides(load_config(config), {**pairs, **chosen})
    except ConfigError as exc:
        raise _fail(str(exc)) from None
    if quiet:
        logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    try:
        result = run_training(data, out, resolved, resume=resume, show_progress=not quiet)
    except TrainingInterrupted as exc:
        error_console.print(f"[bold yellow]interrupted:[/] {exc}", highlight=False)
        raise typer.Exit(code=130) from None
    except TrainingInputError as exc:
        raise _fail(str(exc)) from None
    except TrainingError as exc:
        error_console.print(f"[bold red]error:[/] {exc}", highlight=False)
        raise typer.Exit(code=1) from None
    for warning in result.warnings:
        error_console.print(f"[yellow]warning:[/] {warning}", highlight=False)
    if result.bundle_dir is None:
        return
    metrics = result.validation_metrics
    console.print(
        f"Validation ({metrics['images']} images): accuracy {metrics['accuracy']:.3f}, "
        f"balanced accuracy {metrics['balanced_accuracy']:.3f}"
    )
    console.print(f"Model bundle: {result.bundle_dir}")
