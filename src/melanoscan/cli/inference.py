"""``predict`` and ``export``: predictions for people, and the ONNX form of a bundle."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from melanoscan.cli._app import (
    BackendOpt,
    ModelOpt,
    QuietOpt,
    app,
    console,
    error_console,
    fail,
    output_file,
    output_folder,
    writing,
)

FLAGGED_EXIT_CODE = 3
"""``predict``: nothing was skipped, but the dermoscopy gate flagged at least one image."""


@app.command()
def predict(
    paths: Annotated[
        list[Path], typer.Argument(help="Image files, directories (recursive) or globs.",
                                   show_default=False)
    ],
    model: ModelOpt = None,
    output_format: Annotated[
        str, typer.Option("--format", help="table (triage list), csv or json.")
    ] = "table",
    output: Annotated[Path | None, typer.Option(help="Write to this file, not stdout.")] = None,
    backend: BackendOpt = "auto",
    report: Annotated[
        Path | None,
        typer.Option(help="Also write an HTML triage report (thumbnails, Grad-CAM) here."),
    ] = None,
    no_gate: Annotated[
        bool,
        typer.Option("--no-gate", help="Score images the dermoscopy gate flags anyway (marked)."),
    ] = False,
    tta: Annotated[
        bool,
        typer.Option(help="Average over the 8 flips and 90-degree rotations of each image "
                     "(test-time augmentation; 8 times slower)."),
    ] = False,
    quiet: QuietOpt = False,
) -> None:
    """Classify dermoscopy images and raise the melanoma alert.

    Each image first passes the model's dermoscopy gate: one that is not a dermoscopy image or
    is too poor to read (blank, blurred, badly exposed, tiny) is listed with the reason and gets
    no alert and no class; --no-gate scores it anyway, marked.

    Exit codes: 0 every input predicted and passed the gate; 1 some inputs skipped (listed with
    their reason; the others are predicted); 2 bad input (no model, unknown option, nothing to
    predict); 3 none skipped, but the gate flagged some images (listed with the reason).
    """
    from melanoscan.bundle import BundleError
    from melanoscan.files import write_text
    from melanoscan.inference.predictor import Predictor, expand_inputs
    from melanoscan.inference.render import print_table, to_csv, to_json
    from melanoscan.progress import progress_bar

    if output_format not in ("table", "csv", "json"):
        raise fail(f"--format must be table, csv or json, not {output_format!r}")
    if output is not None:
        output_file(output, "--output")
    if report is not None:
        output_folder(report, "--report")
    try:
        predictor = Predictor(model, backend=backend)
    except (BundleError, ValueError) as exc:
        raise fail(str(exc)) from None
    files, skipped = expand_inputs(paths)
    if not files:
        raise fail("no image found in " + ", ".join(map(str, paths)))
    with progress_bar("Predicting", len(files), enabled=not quiet) as advance:
        predictions, unreadable = predictor.predict_files(files, progress=advance,
                                                          gate=not no_gate, tta=tta)
    skipped += unreadable
    if output_format == "table" and output is None:
        print_table(predictions, skipped, predictor, console)
    else:
        if output_format in ("csv", "table"):  # a table written to a file is the CSV
            text = to_csv(predictions, predictor.classes)
        else:
            text = to_json(predictions, skipped, predictor)
        if output is None:
            sys.stdout.write(text)
        else:
            with writing(output):
                write_text(output, text)
            error_console.print(f"Wrote {output}")
        for s in skipped:
            error_console.print(f"[yellow]skipped[/] {s.path}: {s.reason}", highlight=False)
        for p in predictions:
            if p.flagged:
                error_console.print(f"[yellow]{p.gate.replace('_', ' ')}[/] {p.path}: "
                                    f"{p.gate_reason}", highlight=False)
    if report is not None:
        from melanoscan.inference.triage_report import write_triage_report

        with writing(report):
            page = write_triage_report(predictions, skipped, predictor, report)
        error_console.print(f"Wrote {page}")
    if skipped:
        raise typer.Exit(code=1)
    if any(p.flagged for p in predictions):
        raise typer.Exit(code=FLAGGED_EXIT_CODE)


@app.command()
def export(
    model: Annotated[Path, typer.Option("--model", help="Model bundle directory.")],
    output: Annotated[
        Path | None, typer.Option(help="Directory for the exported bundle (default: in place).")
    ] = None,
) -> None:
    """Write an ONNX model (dynamic batch) next to the bundle metadata; checked against torch."""
    from melanoscan.bundle import BundleError, read_metadata
    from melanoscan.inference.export import export_onnx

    try:
        read_metadata(model)  # before making the output folder
    except BundleError as exc:
        raise fail(str(exc)) from None
    if output is not None:
        output_folder(output, "--output")
    try:
        with writing(output or model):
            target = export_onnx(model, output)
    except BundleError as exc:
        raise fail(str(exc)) from None
    console.print(f"ONNX model written: {target / 'model.onnx'}")


@app.command()
def explain(
    image: Annotated[Path, typer.Argument(help="One image file.", show_default=False)],
    output: Annotated[Path, typer.Option(help="PNG to write: the Grad-CAM overlay.")],
    model: ModelOpt = None,
    target: Annotated[
        str | None, typer.Option(help="Class to explain (default: the predicted class).")
    ] = None,
    no_gate: Annotated[
        bool,
        typer.Option("--no-gate", help="Explain an image the dermoscopy gate flags anyway."),
    ] = False,
) -> None:
    """Grad-CAM: the regions that drove a class, as a heat map over the image.

    The image first passes the model's dermoscopy gate, as in predict: a flagged image gets no
    explanation (exit code 3) unless --no-gate.
    """
    from melanoscan.bundle import BundleError, load_bundle, resolve_bundle_path
    from melanoscan.data.images import ImageDecodeError, load_rgb
    from melanoscan.inference.gradcam import explain as run_explain
    from melanoscan.inference.predictor import Predictor

    output_file(output, "--output")
    try:
        bundle = load_bundle(resolve_bundle_path(model))
        picture = load_rgb(image)
        verdict = Predictor(bundle.path).predict([picture], gate=not no_gate)[0]
        if verdict.flagged and not no_gate:
            error_console.print(f"[yellow]{verdict.headline}[/] {image}: {verdict.gate_reason}; "
                                "no explanation written (--no-gate explains it anyway)",
                                highlight=False)
            raise typer.Exit(code=FLAGGED_EXIT_CODE)
        explanation = run_explain(bundle, picture, target)
    except (BundleError, ImageDecodeError, ValueError) as exc:
        raise fail(str(exc)) from None
    with writing(output):
        explanation.save(output)
    note = f" (gate off: {verdict.gate_reason})" if verdict.gate_overridden else ""
    console.print(f"{explanation.target_class} (probability {explanation.probability:.3f}): "
                  f"overlay written to {output}{note}", highlight=False)
