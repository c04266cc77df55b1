"""Predictions as a triage table, CSV or JSON (one layout shared by the CLI and the service)."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence

from rich.console import Console
from rich.table import Table

from melanoscan.inference.predictor import Prediction, Predictor, SkippedInput
from melanoscan.taxonomy import DISPLAY_NAMES

__all__ = ["FIXED_COLUMNS", "model_fields", "print_table", "to_csv", "to_json"]

FIXED_COLUMNS = ("path", "predicted_class", "confidence", "melanoma_probability",
                 "melanoma_alert")


def to_csv(predictions: Sequence[Prediction], classes: Sequence[str]) -> str:
    """``path, predicted_class, confidence, melanoma_probability, melanoma_alert, <classes>``."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([*FIXED_COLUMNS, *classes])
    for p in predictions:
        writer.writerow([p.path, p.predicted_class, f"{p.confidence:.6f}",
                         f"{p.melanoma_probability:.6f}", str(p.melanoma_alert).lower(),
                         *(f"{p.probabilities[c]:.6f}" for c in classes)])
    return buffer.getvalue()


def to_json(
    predictions: Sequence[Prediction], skipped: Sequence[SkippedInput], predictor: Predictor
) -> str:
    payload = {
        "model": model_fields(predictor),
        "predictions": [p.to_dict() for p in predictions],
        "skipped": [vars(s) for s in skipped],
    }
    return json.dumps(payload, indent=2) + "\n"


def model_fields(predictor: Predictor) -> dict[str, object]:
    """The model block of a JSON answer (``predict --format json`` and the service)."""
    return {"name": predictor.name, "version": predictor.version,
            "alert_threshold": predictor.alert_threshold, "backend": predictor.backend}


def triage_order(predictions: Sequence[Prediction]) -> list[Prediction]:
    """Highest melanoma probability first."""
    return sorted(predictions, key=lambda p: p.melanoma_probability, reverse=True)


def print_table(
    predictions: Sequence[Prediction], skipped: Sequence[SkippedInput], predictor: Predictor,
    console: Console,
) -> None:
    table = Table(title=f"{predictor.name}: melanoma triage (alert at probability >= "
                  f"{predictor.alert_threshold:.3f})")
    for column, justify in (("#", "right"), ("image", "left"), ("melanoma", "right"),
                            ("alert", "center"), ("predicted class", "left"),
                            ("confidence", "right")):
        # Paths wrap rather than lose their file name to an ellipsis.
        table.add_column(column, justify=justify, overflow="fold")  # type: ignore[arg-type]
    for rank, p in enumerate(triage_order(predictions), start=1):
        style = "bold red" if p.melanoma_alert else None
        table.add_row(str(rank), p.path or "-", f"{p.melanoma_probability:.3f}",
                      "ALERT" if p.melanoma_alert else "", DISPLAY_NAMES.get(p.predicted_class,
                                                                            p.predicted_class),
                      f"{p.confidence:.3f}", style=style)
    console.print(table)
    for s in skipped:
        console.print(f"[yellow]skipped[/] {s.path}: {s.reason}", highlight=False)
    alerts = sum(p.melanoma_alert for p in predictions)
    console.print(f"{len(predictions)} images, {alerts} alerts, {len(skipped)} skipped. "
                  "Research tool, not a medical device.")
