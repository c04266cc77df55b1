"""``train``: one training run into a run directory and a model bundle."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

from melanoscan.cli._app import QuietOpt, app, console, error_console, fail


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
    chosen: dict[str, object] = {k: v for k, v in named.items() if v is not None}
    try:
        pairs = dict(parse_override(text) for text in overrides or [])
        if model is not None and "model.pretrained" not in {**pairs, **chosen}:
            _start_from_scratch_if_no_weights(model, chosen)
        if resume and (config or chosen or pairs):
            raise ConfigError("--resume continues with the run's saved config; drop the options")
        resolved = None if resume else apply_overrides(load_config(config), {**pairs, **chosen})
    except ConfigError as exc:
        raise fail(str(exc)) from None
    if quiet:
        logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    try:
        result = run_training(data, out, resolved, resume=resume, show_progress=not quiet,
                              report=_note)
    except TrainingInterrupted as exc:
        error_console.print(f"[bold yellow]interrupted:[/] {exc}", highlight=False)
        raise typer.Exit(code=130) from None
    except TrainingInputError as exc:
        raise fail(str(exc)) from None
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


def _note(text: str) -> None:
    from rich.markup import escape

    error_console.print(f"[yellow]note:[/] {escape(text)}", highlight=False)


def _start_from_scratch_if_no_weights(model: str, chosen: dict[str, object]) -> None:
    """``--model`` naming a network without pretrained weights implies ``--no-pretrained``."""
    from melanoscan.models.factory import MODEL_NAMES, get_model_spec

    if model in MODEL_NAMES and get_model_spec(model).weights_package is None:
        chosen["model.pretrained"] = False
        _note(f"{model} has no pretrained weights: training from scratch "
              "(model.pretrained: false)")
