"""What every output leads with: the gate's verdict, "melanoma suspected", or the class."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from types import SimpleNamespace

from rich.console import Console

from melanoscan.inference.predictor import Prediction
from melanoscan.inference.render import print_table, to_csv, triage_order
from melanoscan.inference.triage_report import _card, _refused_card
from melanoscan.taxonomy import CLASSES


def _prediction(name: str, top: str, melanoma: float, alert: bool, **gate: object) -> Prediction:
    probabilities = dict.fromkeys(CLASSES, (1 - melanoma) / (len(CLASSES) - 1))
    probabilities["melanoma"] = melanoma
    probabilities[top] = max(probabilities[top], 0.5)
    return Prediction(path=name, predicted_class=top, confidence=probabilities[top],
                      melanoma_probability=melanoma, melanoma_alert=alert,
                      probabilities=probabilities, **gate)  # type: ignore[arg-type]


SUSPECTED = _prediction("suspect.jpg", "nevus", 0.2, True, gate="ok", gate_score=0.4)
PLAIN = _prediction("plain.jpg", "nevus", 0.01, False, gate="ok", gate_score=0.3)
REFUSED = _prediction("selfie.jpg", "nevus", 0.6, False, gate="not_dermoscopy", gate_score=3.0,
                      gate_reason="unlike the dermoscopy images this model knows")
PREDICTOR = SimpleNamespace(name="m", alert_threshold=0.1, gate=object())


def test_an_alert_leads_with_melanoma_suspected_whatever_the_top_class() -> None:
    assert SUSPECTED.headline == "melanoma suspected"
    assert PLAIN.headline == "Nevus"
    assert REFUSED.headline == "not dermoscopy"
    rows = {r["path"]: r for r in csv.DictReader(io.StringIO(to_csv(
        [SUSPECTED, PLAIN, REFUSED], CLASSES)))}
    assert rows["suspect.jpg"]["headline"] == "melanoma suspected"
    assert list(rows["suspect.jpg"])[:2] == ["path", "headline"]
    assert SUSPECTED.to_dict()["headline"] == "melanoma suspected"


def test_table_leads_with_the_verdict_and_lists_refused_images_last() -> None:
    assert triage_order([REFUSED, PLAIN, SUSPECTED]) == [SUSPECTED, PLAIN, REFUSED]
    console = Console(width=200, record=True, file=io.StringIO())
    print_table([REFUSED, PLAIN, SUSPECTED], [], PREDICTOR, console)  # type: ignore[arg-type]
    text = console.export_text()
    lines = [line for line in text.splitlines() if ".jpg" in line]
    assert "MELANOMA SUSPECTED" in lines[0] and "suspect.jpg" in lines[0]
    assert lines[0].index("MELANOMA SUSPECTED") < lines[0].index("Nevus")
    assert "NOT DERMOSCOPY" in lines[2] and "0.600" not in lines[2]  # no score for it
    assert "1 flagged by the gate" in text


def test_report_cards_lead_with_the_headline(tmp_path: Path) -> None:
    thumb, heat = tmp_path / "a.jpg", tmp_path / "a.png"
    card = _card(1, SUSPECTED, thumb, heat, tmp_path)
    assert card.index("melanoma suspected") < card.index("Nevus")
    refused = _refused_card(2, REFUSED, thumb, tmp_path)
    assert "NOT DERMOSCOPY" in refused and "Nevus" not in refused
