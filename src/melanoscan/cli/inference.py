"""``predict`` and ``export``: predictions for people, and the ONNX forms of a bundle."""

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
    int8: Annotated[
        bool,
        typer.Option("--int8", help="Write model.int8.onnx instead of model.onnx: quantised, "
                     "calibrated on the bundle's training images, and kept only if it passes "
                     "the parity check."),
    ] = False,
    data: Annotated[
        list[Path] | None,
        typer.Option("--data", help="With --int8: where the bundle's training images are "
                     "(repeatable; default: the sources it records, relative to here). Its "
                     "training images calibrate; its validation images check parity unless "
                     "--parity-data is given."),
    ] = None,
    parity_data: Annotated[
        list[Path] | None,
        typer.Option("--parity-data", help="With --int8: labelled images to check parity on "
                     "(repeatable; any format 'audit' reads)."),
    ] = None,
    calibration_images: Annotated[
        int, typer.Option(min=1, help="With --int8: training images to calibrate on.")
    ] = 300,
    parity_images: Annotated[
        int, typer.Option(min=1, help="With --int8: at most this many images to check on.")
    ] = 1000,
    half_weights: Annotated[
        bool,
        typer.Option("--half-weights", help="Only store weights.pt in half precision (half "
                     "the size); exports, calibration and gate made for the previous weights "
                     "must then be redone (the command lists how)."),
    ] = False,
) -> None:
    """Write an ONNX model (dynamic batch) next to the bundle metadata; checked against torch.

    With --int8, write its int8 quantisation instead (the fp32 model is made in a temporary
    folder when the bundle has none), only if it passes the parity check: top-1 agreement
    >= 99%, melanoma AUC within 0.005 and the same alert decision on >= 99% of the images.
    Exit codes: 0 written; 1 the int8 model failed the parity check (nothing written, the
    criteria missed are listed); 2 bad input (no bundle, no images found, stale calibration).
    """
    from melanoscan.bundle import BundleError, read_metadata
    from melanoscan.data.sources import DataSourceError
    from melanoscan.inference.export import export_onnx
    from melanoscan.inference.quantize import QuantizationError

    try:
        read_metadata(model)  # before making the output folder
    except BundleError as exc:
        raise fail(str(exc)) from None
    if half_weights and int8:
        raise fail("--half-weights changes the weights: refit the calibration and the gate "
                   "first, then run export --int8")
    if (data or parity_data) and not int8:
        raise fail("--data and --parity-data are for --int8")
    if output is not None:
        output_folder(output, "--output")
    target = model
    try:
        if output is not None and (half_weights or int8):
            import shutil

            with writing(output):
                shutil.copytree(model, output, dirs_exist_ok=True)
            target = output
        if half_weights:
            _halve(target)
            return
        if int8:
            _export_int8(target, data, parity_data, calibration_images, parity_images)
            return
        with writing(output or model):
            target = export_onnx(model, output)
    except (BundleError, DataSourceError, QuantizationError) as exc:
        raise fail(str(exc)) from None
    console.print(f"ONNX model written: {target / 'model.onnx'}")


def _halve(bundle: Path) -> None:
    """``export --half-weights``: convert, then say what must be redone."""
    from melanoscan.bundle import halve_weights

    with writing(bundle):
        done = halve_weights(bundle)
    if not done.converted:
        console.print(f"{bundle / 'weights.pt'} is already in half precision; nothing changed.")
        return
    console.print(f"weights.pt in half precision: {done.bytes_before / 1e6:.1f} MB -> "
                  f"{done.bytes_after / 1e6:.1f} MB ({done.converted} tensors).")
    for name in done.removed:
        console.print(f"Removed {name}: it was made from the previous weights.")
    steps = [*done.stale, f"melanoscan export --int8 --model {bundle} (and/or melanoscan "
             f"export --model {bundle} for the fp32 ONNX model)"]
    error_console.print("[yellow]The weights' SHA-256 changed: refit what was fitted for the "
                        "previous weights, in this order:[/]", highlight=False)
    for number, step in enumerate(steps, 1):
        error_console.print(f"  {number}. {step}", highlight=False)


def _export_int8(
    bundle: Path, data: list[Path] | None, parity_data: list[Path] | None,
    calibration_images: int, parity_images: int,
) -> None:
    """``export --int8``: quantise, check, and write only a model that passes."""
    from melanoscan.inference.export import export_int8

    with writing(bundle):
        done = export_int8(bundle, sources=data, parity_data=parity_data,
                           calibration_images=calibration_images, parity_images=parity_images)
    report = done.report
    auc = ("n/a" if report["auc_difference"] is None else
           f"{report['melanoma_auc_fp32']:.4f} -> {report['melanoma_auc_int8']:.4f}")
    console.print(
        f"Parity on {report['images']} images ({report['data']}): top-1 agreement "
        f"{report['top1_agreement']:.2%}, melanoma AUC {auc}, same alert decision on "
        f"{report['alert_agreement']:.2%} (threshold {report['alert_threshold']:.4f}).",
        highlight=False)
    if not done.written:
        for reason in done.reasons:
            error_console.print(f"[bold red]parity check failed:[/] {reason}", highlight=False)
        error_console.print(f"Nothing written: {done.path.name} was not kept.", highlight=False)
        raise typer.Exit(code=1)
    console.print(f"int8 model written: {done.path} (passed the parity check; --backend auto "
                  "now uses it).", highlight=False)


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
