"""``evaluate`` and ``calibrate``: score a model bundle on labelled data, and calibrate it."""

from __future__ import annotations

import json
import sys
import warnings
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
    output_folder,
    writing,
)

DataOpt = Annotated[
    list[Path],
    typer.Option("--data", help="Labelled data source (repeatable); any format 'audit' reads."),
]
SplitOpt = Annotated[
    str | None, typer.Option(help="Only this split of the data (e.g. test, val).")
]


@app.command()
def evaluate(
    data: DataOpt,
    model: ModelOpt = None,
    split: SplitOpt = None,
    out: Annotated[
        Path | None, typer.Option(help="Write report.html, report.json, plots, predictions.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    tta: Annotated[
        bool, typer.Option(help="Also score with test-time augmentation (8 flips/rotations).")
    ] = False,
    include_training_overlap: Annotated[
        bool,
        typer.Option(help="Score images the model was trained on too (flagged in the report)."),
    ] = False,
    backend: BackendOpt = "auto",
    bootstrap: Annotated[
        int,
        typer.Option("--bootstrap", min=1, metavar="N",
                     help="Bootstrap resamples of each 95% interval (fewer: faster, rougher)."),
    ] = 1000,
    quiet: QuietOpt = False,
) -> None:
    """Score a model on labelled images, with 95% bootstrap intervals, plots and a report.

    The images go through the model as 'melanoscan predict' sends them, on the same backend
    (named in the report). Images the model was trained or validated on are left out of the
    score and reported.
    Exit codes: 0 done; 2 bad input (no bundle, no data, nothing left to score).
    """
    from melanoscan.bundle import BundleError
    from melanoscan.data.sources import DataSourceError
    from melanoscan.evaluation.evaluate import EvaluationError
    from melanoscan.evaluation.evaluate import evaluate as run_evaluation
    from melanoscan.evaluation.outputs import print_summary, write_outputs
    from melanoscan.inference.predictor import Predictor

    if out is not None:
        output_folder(out, "--out")
    try:
        evaluation = run_evaluation(
            Predictor(model, backend=backend), data, split=split, tta=tta,
            score_training_overlap=include_training_overlap, bootstrap_samples=bootstrap,
            show_progress=not quiet,
        )
    except (BundleError, DataSourceError, EvaluationError, ValueError) as exc:
        raise fail(str(exc)) from None
    if as_json:
        sys.stdout.write(json.dumps(evaluation.report, indent=2) + "\n")
    else:
        print_summary(evaluation.report, console)
    if out is not None:
        with writing(out):
            files = write_outputs(evaluation, out)
        error_console.print(f"Wrote {', '.join(str(f) for f in files)}")


@app.command()
def calibrate(
    data: DataOpt,
    model: Annotated[Path, typer.Option("--model", help="Model bundle directory to update.")],
    split: SplitOpt = None,
    target_sensitivity: Annotated[
        float, typer.Option(min=0.01, max=1.0, help="Melanoma sensitivity the alert must reach.")
    ] = 0.95,
    gate_only: Annotated[
        bool,
        typer.Option("--gate-only", help="Only refit the dermoscopy gate, from the data the "
                     "model was trained on (its training images fit it, the others set its "
                     "threshold)."),
    ] = False,
    negatives: Annotated[
        Path | None,
        typer.Option("--negatives", help="With --gate-only: example non-dermoscopy images (a "
                     "folder, or a CSV with a 'path' column) the gate learns to refuse "
                     "(benchmarks/negatives.py writes fit.csv)."),
    ] = None,
    backend: BackendOpt = "auto",
    quiet: QuietOpt = False,
) -> None:
    """Fit temperature scaling and the melanoma alert threshold on held-out data; save them.

    Training already does this on its validation split; use this for new held-out data. With
    --gate-only, refit the dermoscopy gate instead (training also fits it): --data must hold the
    model's training images.
    Exit codes: 0 done; 2 bad input (no bundle, training images given, no melanoma; for
    --gate-only: too few training or other images).
    """
    from melanoscan.bundle import BundleError
    from melanoscan.data.sources import DataSourceError
    from melanoscan.evaluation.evaluate import EvaluationError
    from melanoscan.evaluation.recalibrate import calibrate_bundle
    from melanoscan.inference.predictor import Predictor

    if negatives is not None and not gate_only:
        raise fail("--negatives is for the dermoscopy gate: add --gate-only")
    if gate_only:
        from melanoscan.evaluation.gate_fit import refit_gate

        try:
            gate = refit_gate(model, data, split=split, negatives=negatives,
                              show_progress=not quiet)
        except (BundleError, DataSourceError, EvaluationError) as exc:
            raise fail(str(exc)) from None
        info = gate.info
        console.print(
            f"Dermoscopy gate fitted on {info['fit_images']} training images, threshold set on "
            f"{info['threshold_images']} others ({info['held_out_flagged']:.1%} of them "
            f"flagged)" + (f", contrast score learnt against {info['contrast_negatives']} "
                           "non-dermoscopy images" if "contrast_negatives" in info else "")
            + f"; saved in {model}.", highlight=False)
        return
    try:
        with warnings.catch_warnings():  # "not calibrated: run melanoscan calibrate": doing so
            warnings.filterwarnings("ignore", message=r".* is not calibrated")
            warnings.filterwarnings("ignore", message=r".* were fitted for other weights")
            predictor = Predictor(model, backend=backend)
        result = calibrate_bundle(predictor, data, split=split,
                                  target_sensitivity=target_sensitivity, show_progress=not quiet)
    except (BundleError, DataSourceError, EvaluationError, ValueError) as exc:
        raise fail(str(exc)) from None
    console.print(
        f"Temperature {result['temperature']:.3f}; melanoma alert at probability >= "
        f"{result['alert_threshold']:.3f} (target sensitivity {target_sensitivity:.2f}); "
        f"ECE {result['ece_before']:.3f} -> {result['ece_after']:.3f}; fitted on "
        f"{result['fitted_on']}. Saved in {model}."
    )
