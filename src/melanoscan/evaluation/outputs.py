"""What an evaluation shows: a terminal summary, and report files with plots."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from melanoscan.evaluation.evaluate import Evaluation
from melanoscan.evaluation.plots import plot_confusion_matrix, plot_reliability, plot_roc_curves
from melanoscan.evaluation.report import format_estimate, write_html_report
from melanoscan.files import write_csv, write_text

__all__ = ["print_summary", "write_outputs"]

HEADLINES: tuple[tuple[str, str], ...] = (
    ("accuracy", "accuracy"),
    ("balanced accuracy", "balanced_accuracy"),
    ("macro ROC AUC (one vs rest)", "macro_auc"),
    ("melanoma ROC AUC", "melanoma.auc"),
    ("melanoma sensitivity at alert", "melanoma.sensitivity"),
    ("melanoma specificity at alert", "melanoma.specificity"),
)


def _get(metrics: dict[str, Any], dotted: str) -> Any:
    value: Any = metrics
    for part in dotted.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def print_summary(report: dict[str, Any], console: Console) -> None:
    data = report["data"]
    overlap = data["training_overlap"]
    if overlap["count"]:
        action = "scored anyway (flagged)" if overlap["scored"] else "left out of the score"
        console.print(f"[bold red]warning:[/] {overlap['count']} image(s) were in the model's "
                      f"training data: {action}", highlight=False)
    table = Table(title=f"{report['model']['name']} on {', '.join(data['sources'])}"
                  + (f" [{data['split']}]" if data["split"] else "")
                  + f": {data['scored']} images, {report['taxonomy']} classes, 95% CI")
    table.add_column("figure")
    for name in report["results"]:
        table.add_column(name, justify="right")
    for label, key in HEADLINES:
        table.add_row(label, *(format_estimate(_get(m, key)) for m in report["results"].values()))
    for level in ("0.90", "0.95"):
        table.add_row(
            f"melanoma specificity at {float(level):.0%} sensitivity",
            *(_plain(m["melanoma"]["specificity_at_sensitivity"][level])
              for m in report["results"].values()),
        )
    table.add_row("ECE uncalibrated / calibrated", *(
        f"{_plain(m['calibration']['ece_uncalibrated'])} / "
        f"{_plain(m['calibration']['ece_calibrated'])}" for m in report["results"].values()))
    console.print(table)
    if report["mapping_note"]:
        console.print(f"[dim]{report['mapping_note']}[/]", highlight=False)
    if data["skipped"]:
        console.print(f"[yellow]{len(data['skipped'])} file(s) skipped[/] (see report.json)")
    _print_gate(report.get("gate") or {}, data["scored"], console)


def _print_gate(gate: dict[str, Any], scored: int, console: Console) -> None:
    if not gate.get("available"):
        console.print("[dim]This model has no dermoscopy gate.[/]", highlight=False)
        return
    console.print(f"Dermoscopy gate: {gate['flagged']} of {scored} images flagged "
                  f"({gate['not_dermoscopy']} not dermoscopy, {gate['poor_quality']} poor "
                  "quality); the figures above include them.", highlight=False)
    without = gate.get("results_without_flagged")
    if not without:
        return
    table = Table(title=f"Without the {gate['flagged']} flagged images, 95% CI")
    table.add_column("figure")
    for name in without:
        table.add_column(name, justify="right")
    for label, key in HEADLINES:
        table.add_row(label, *(format_estimate(_get(m, key)) for m in without.values()))
    console.print(table)


def _plain(value: float | None) -> str:
    return "—" if value is None else f"{value:.3f}"


def write_outputs(evaluation: Evaluation, out_dir: Path) -> list[Path]:
    """report.json, predictions.csv, the plots and report.html in ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    report, labels = evaluation.report, evaluation.labels
    classes = report["classes"]
    files = [out_dir / "report.json", out_dir / "predictions.csv"]
    write_text(files[0], json.dumps(report, indent=2) + "\n")
    write_csv(evaluation.table, files[1])
    images = []
    for name, probabilities in evaluation.probabilities.items():
        suffix = "" if name == "plain" else f"_{name}"
        metrics = report["results"][name]
        confusion = np.asarray(metrics["confusion_matrix"])
        images.append(plot_confusion_matrix(confusion, classes,
                                            out_dir / f"confusion_matrix{suffix}.png",
                                            title=f"Confusion matrix ({name})"))
        melanoma = metrics["melanoma"]
        points = []
        if melanoma["sensitivity"] and melanoma["specificity"]:
            points.append(("alert threshold", 1 - melanoma["specificity"]["value"],
                           melanoma["sensitivity"]["value"]))
        positive = "melanoma" if "melanoma" in classes else "mel"
        images.append(plot_roc_curves(labels, probabilities, classes,
                                      out_dir / f"roc_curves{suffix}.png", positive=positive,
                                      operating_points=points))
        curves = {"uncalibrated": evaluation.uncalibrated[name]}
        if report["model"]["calibration"].get("temperature"):
            curves["temperature-scaled"] = probabilities
        images.append(plot_reliability(labels, curves, out_dir / f"reliability{suffix}.png"))
    files.extend(images)
    files.append(write_html_report(report, out_dir, images))
    return files
