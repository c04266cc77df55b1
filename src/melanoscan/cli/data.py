"""``audit`` and ``split``: look at a dataset, and cut it into leak-free splits."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from melanoscan.cli._app import (
    DataArg,
    QuietOpt,
    WorkersOpt,
    app,
    console,
    error_console,
    fail,
    output_file,
    output_folder,
    read_and_scan,
    writing,
)
from melanoscan.data.duplicates import NEAR_DUPLICATE_MAX_DISTANCE
from melanoscan.files import write_csv


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
    """Audit datasets: class balance, duplicates, leaks between splits and sources, conflicts."""
    from melanoscan.data.audit import audit as run_audit
    from melanoscan.data.audit_report import print_summary, write_report

    if out is not None:
        output_folder(out, "--out")
    manifest = read_and_scan(data, workers, quiet)
    if len(manifest) == 0:
        raise fail("no readable image in the given sources")
    report = run_audit(manifest, sources=[str(d) for d in data], near_max_distance=near_distance)
    if as_json:
        sys.stdout.write(json.dumps(report.to_dict(), indent=2) + "\n")
    else:
        print_summary(report, console)
    if out is not None:
        with writing(out):
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
    keep_duplicate_copies: Annotated[
        bool, typer.Option(help="Train on every copy of an image found in several sources.")
    ] = False,
    resolve_by_authority: Annotated[
        bool,
        typer.Option(
            "--resolve-by-authority",
            help="Where a class folder and official ground truth (challenge CSV, HAM10000 "
            "metadata) label one image differently, train on the official label instead of "
            "excluding it; the relabelled images are listed next to OUT (manifest.relabelled.csv "
            "for manifest.csv).",
        ),
    ] = False,
    holdout: Annotated[
        list[Path] | None,
        typer.Option(
            "--holdout",
            help="A source held out entirely (split 'holdout'): neither it nor any copy, "
            "lesion or near duplicate of it in the other sources is trained or validated on. "
            "Repeatable.",
            show_default=False,
        ),
    ] = None,
    workers: WorkersOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Make leak-free stratified splits; write the split manifest and the exclusions."""
    from melanoscan.data.sources import HOLDOUT_SPLIT
    from melanoscan.data.splits import CleaningPolicy, kfold_split, train_val_split

    output_file(out, "--out")
    manifest = read_and_scan(data, workers, quiet, holdout=holdout)
    policy = CleaningPolicy(
        exclude_label_conflicts=not keep_conflicts,
        exclude_eval_overlap=not keep_eval_overlap,
        eval_splits=("test", HOLDOUT_SPLIT) if holdout else ("test",),
        group_near_duplicates=group_near_duplicates,
        drop_duplicate_copies=not keep_duplicate_copies,
        resolve_conflicts_by_authority=resolve_by_authority,
    )
    try:
        if folds:
            result = kfold_split(manifest.images, k=folds, seed=seed, policy=policy)
        else:
            result = train_val_split(
                manifest.images, val_fraction=val_fraction, seed=seed, policy=policy
            )
    except ValueError as exc:
        raise fail(str(exc)) from None
    with writing(out):
        written = [
            write_csv(result.table, out),
            write_csv(result.excluded, out.with_name(out.stem + ".excluded.csv")),
            write_csv(manifest.skipped_table(), out.with_name(out.stem + ".skipped.csv")),
        ]
        if resolve_by_authority:
            relabelled = out.with_name(out.stem + ".relabelled.csv")
            written.append(write_csv(result.relabelled, relabelled))
    summary = result.summary()
    summary["skipped"] = len(manifest.skipped)
    console.print_json(json.dumps(summary))
    error_console.print(f"Wrote {', '.join(map(str, written))}")
