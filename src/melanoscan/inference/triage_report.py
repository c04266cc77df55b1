"""An HTML triage report: images in melanoma-risk order, probabilities, alerts, Grad-CAM.

Images the dermoscopy gate refused come last, with the reason and no class or heat map.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import quote

from PIL import Image

from melanoscan.bundle import load_bundle
from melanoscan.data.images import ImageDecodeError, load_rgb
from melanoscan.files import printable, write_text
from melanoscan.inference.gradcam import explain
from melanoscan.inference.predictor import Prediction, Predictor, SkippedInput
from melanoscan.inference.render import count_flagged, triage_order
from melanoscan.report_page import html_page
from melanoscan.taxonomy import DISPLAY_NAMES

__all__ = ["write_triage_report"]

THUMBNAIL = 192
STYLE = """
.card{display:flex;gap:1rem;border:1px solid #ddd;border-radius:8px;padding:1rem;margin:1rem 0}
.card.alert{border:2px solid #c62828;background:#fff5f5}
.card.flagged{border:2px dashed #b26a00;background:#fffaf0}
.verdict{background:#b26a00;color:#fff;padding:.15rem .5rem;border-radius:4px;font-weight:bold}
.card img{width:192px;height:192px;object-fit:cover;border-radius:4px}
.badge{background:#c62828;color:#fff;padding:.15rem .5rem;border-radius:4px;font-weight:bold}
.card table{font-size:.9rem;margin:0}.card td{border:none;padding:.1rem .6rem}
.bar{background:#4a78c2;height:.7rem;display:inline-block}
"""


def write_triage_report(
    predictions: Sequence[Prediction],
    skipped: Sequence[SkippedInput],
    predictor: Predictor,
    out_dir: Path,
) -> Path:
    """Write ``out_dir/report.html`` and its images (thumbnails and Grad-CAM overlays)."""
    images_dir = out_dir / "images"
    images_dir.mkdir(parents=True, exist_ok=True)
    bundle = load_bundle(predictor.path)  # Grad-CAM needs gradients: the torch model
    cards = []
    for rank, prediction in enumerate(triage_order(predictions), start=1):
        try:
            image = load_rgb(prediction.path or "")
        except ImageDecodeError:
            continue  # it was readable a moment ago; the table above still lists it
        thumb = images_dir / f"{rank:04d}.jpg"
        fitted = image.copy()
        fitted.thumbnail((THUMBNAIL, THUMBNAIL), Image.Resampling.BICUBIC)
        fitted.save(thumb, quality=90)
        if prediction.flagged and not prediction.gate_overridden:
            cards.append(_refused_card(rank, prediction, thumb, out_dir))
            continue
        heat = explain(bundle, image, prediction.predicted_class).save(
            images_dir / f"{rank:04d}_gradcam.png"
        )
        cards.append(_card(rank, prediction, thumb, heat, out_dir))
    alerts = sum(p.melanoma_alert for p in predictions)
    flagged = count_flagged(predictions)
    skipped_items = "".join(
        f"<li>{html.escape(s.path)}: {html.escape(s.reason)}</li>" for s in skipped
    )
    body = f"""<h1>Melanoma triage</h1>
<p class="notice"><b>Research tool, not a medical device.</b> Every result needs a
dermatologist's judgement.</p>
<p>Model <b>{html.escape(predictor.name)}</b>; alert when the melanoma probability is at least
{predictor.alert_threshold:.3f}. {len(predictions)} images, {alerts} alerts, {flagged} flagged
by the dermoscopy gate{"" if predictor.gate is not None else " (this model has no gate)"},
{len(skipped)} skipped. Highest melanoma probability first; images the gate refused (not a
dermoscopy image, or too poor to read) come last, unscored. The heat map (Grad-CAM) shows the
regions that drove the predicted class.</p>
{"".join(cards)}
{f"<h2>Skipped</h2><ul>{skipped_items}</ul>" if skipped else ""}"""
    path = out_dir / "report.html"
    write_text(path, printable(html_page("melanoscan triage", body, STYLE)))
    return path


def _refused_card(rank: int, p: Prediction, thumb: Path, root: Path) -> str:
    return f"""<div class="card flagged">
<img src="{quote(thumb.relative_to(root).as_posix())}" alt="image {rank}">
<div><h3>#{rank} <span class="verdict">{html.escape(p.headline.upper())}</span>
{html.escape(p.path or "")}</h3>
<p>Not analysed: {html.escape(p.gate_reason)}. No class and no melanoma alert are given for
this image; send a dermoscopy image of the lesion instead.</p></div></div>"""


def _card(rank: int, p: Prediction, thumb: Path, heat: Path, root: Path) -> str:
    rows = "".join(
        f"<tr><td>{html.escape(DISPLAY_NAMES.get(name, name))}</td><td>{value:.3f}</td>"
        f'<td><span class="bar" style="width:{value * 150:.0f}px"></span></td></tr>'
        for name, value in sorted(p.probabilities.items(), key=lambda kv: -kv[1])
    )
    badge = '<span class="badge">MELANOMA ALERT</span> ' if p.melanoma_alert else ""
    name = DISPLAY_NAMES.get(p.predicted_class, p.predicted_class)
    marked = (f'<p><span class="verdict">GATE OFF</span> flagged {html.escape(p.gate)}: '
              f"{html.escape(p.gate_reason)}; scored anyway.</p>" if p.gate_overridden else "")
    return f"""<div class="card{" alert" if p.melanoma_alert else ""}">
<img src="{quote(thumb.relative_to(root).as_posix())}" alt="image {rank}">
<img src="{quote(heat.relative_to(root).as_posix())}" alt="Grad-CAM {rank}">
<div><h3>#{rank} {badge}<span class="headline">{html.escape(p.headline)}</span>
{html.escape(p.path or "")}</h3>{marked}
<p>Melanoma probability <b>{p.melanoma_probability:.3f}</b>; top class
<b>{html.escape(name)}</b> ({p.confidence:.3f})</p><table>{rows}</table></div></div>"""
