"""Predictions as a triage table, CSV or JSON (one layout shared by the CLI and the service).

Every form leads with :attr:`Prediction.headline`: the gate's refusal ("not dermoscopy", "poor
quality"), "melanoma suspected" whenever the alert fires (even when another class is on top),
else the predicted class.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence

from rich.console import Console
from rich.table import Table

from melanoscan.inference.predictor import Prediction, Predictor, SkippedInput
from melanoscan.taxonomy import DISPLAY_NAMES

__all__ = [
    "FIXED_COLUMNS",
    "count_flagged",
    "model_fields",
    "print_table",
    "to_csv",
    "to_json",
    "triage_order",
]

FIXED_COLUMNS = ("path", "headline", "gate", "gate_reason", "gate_score", "gate_overridden",
                 "melanoma_alert", "melanoma_probability", "predicted_class", "confidence")


def to_csv(predictions: Sequence[Prediction], classes: Sequence[str]) -> str:
    """:data:`FIXED_COLUMNS`, then the probability of every class; one row per image."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([*FIXED_COLUMNS, *classes])
    for p in predictions:
        writer.writerow([p.path, p.headline, p.gate, p.gate_reason,
                         "" if p.gate_score is None else f"{p.gate_score:.4f}",
                         str(p.gate_overridden).lower(), str(p.melanoma_alert).lower(),
                         f"{p.melanoma_probability:.6f}", p.predicted_class, f"{p.confidence:.6f}",
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
            "alert_threshold": predictor.alert_threshold, "backend": predictor.backend,
            "gate": predictor.gate is not None}


def triage_order(predictions: Sequence[Prediction]) -> list[Prediction]:
    """Highest melanoma probability first; images the gate refused last, in their order."""
    refused = [p for p in predictions if p.flagged and not p.gate_overridden]
    read = [p for p in predictions if not (p.flagged and not p.gate_overridden)]
    return sorted(read, key=lambda p: p.melanoma_probability, reverse=True) + refused


def count_flagged(predictions: Sequence[Prediction]) -> int:
    """How many images the gate flagged (refused, or scored anyway with the gate off)."""
    return sum(p.flagged for p in predictions)


def print_table(
    predictions: Sequence[Prediction], skipped: Sequence[SkippedInput], predictor: Predictor,
    console: Console,
) -> None:
    table = Table(title=f"{predictor.name}: melanoma triage (alert at probability >= "
                  f"{predictor.alert_threshold:.3f})")
    for column, justify in (("#", "right"), ("image", "left"), ("result", "left"),
                            ("melanoma", "right"), ("predicted class", "left"),
                            ("confidence", "right"), ("gate", "left")):
        # Paths wrap rather than lose their file name to an ellipsis.
        table.add_column(column, justify=justify, overflow="fold")  # type: ignore[arg-type]
    for rank, p in enumerate(triage_order(predictions), start=1):
        refused = p.flagged and not p.gate_overridden
        if refused:
            table.add_row(str(rank), p.path or "-", p.headline.upper(), "-", "-", "-",
                          p.gate_reason, style="yellow")
            continue
        gate = p.gate if not p.flagged else f"{p.gate} (gate off): {p.gate_reason}"
        table.add_row(str(rank), p.path or "-",
                      p.headline.upper() if p.melanoma_alert else p.headline,
                      f"{p.melanoma_probability:.3f}",
                      DISPLAY_NAMES.get(p.predicted_class, p.predicted_class),
                      f"{p.confidence:.3f}", gate,
                      style="bold red" if p.melanoma_alert else None)
    console.print(table)
    for s in skipped:
        console.print(f"[yellow]skipped[/] {s.path}: {s.reason}", highlight=False)
    alerts = sum(p.melanoma_alert for p in predictions)
    flagged = count_flagged(predictions)
    note = "" if predictor.gate is not None else " (this model has no dermoscopy gate)"
    console.print(f"{len(predictions)} images, {alerts} alerts, {flagged} flagged by the "
                  f"gate{note}, {len(skipped)} skipped. Research tool, not a medical device.",
                  highlight=False)
