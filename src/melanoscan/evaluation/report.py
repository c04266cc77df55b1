"""Rendering an evaluation report dict as a self-contained HTML page."""

from __future__ import annotations

import html
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

from melanoscan.files import printable, write_text
from melanoscan.report_page import html_page
from melanoscan.taxonomy import DISPLAY_NAMES

__all__ = ["format_estimate", "format_value", "write_html_report"]

LISTED_SKIPPED = 50
MISSING = "—"

_CSS = """.warning{background:#fdecea;border:2px solid #c62828;color:#8e0000;padding:.8em 1em;
margin:1em 0;font-weight:bold}.warning ul{font-weight:normal;font-size:13px}"""


def format_value(value: float | int | None, digits: int = 3) -> str:
    """A number with ``digits`` decimals (integers as they are), or "—" for None."""
    if value is None:
        return MISSING
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return f"{value:.{digits}f}"


def format_estimate(est: dict[str, Any] | None) -> str:
    """An estimate ``{"value", "ci95": [low, high]}`` as "0.812 [0.741, 0.873]"; None as "—"."""
    if est is None or est.get("value") is None:
        return MISSING
    interval = est.get("ci95")
    if not interval or any(bound is None for bound in interval):
        return format_value(est["value"])
    low, high = interval
    return f"{est['value']:.3f} [{low:.3f}, {high:.3f}]"


def _esc(value: object) -> str:
    return html.escape(MISSING if value is None else str(value))


def _rows(pairs: Sequence[tuple[str, object]]) -> str:
    body = "".join(f"<tr><th>{_esc(key)}</th><td>{_esc(value)}</td></tr>" for key, value in pairs)
    return f"<table>{body}</table>"


def _overlap_warning(overlap: dict[str, Any]) -> str:
    count = overlap.get("count", 0)
    if not count:
        return ""
    fate = (
        "They were scored, so the figures below are optimistic."
        if overlap.get("scored")
        else "They were left out of the figures below."
    )
    paths = overlap.get("paths", [])
    listed = "".join(f"<li>{_esc(p)}</li>" for p in paths[:LISTED_SKIPPED])
    if len(paths) > LISTED_SKIPPED:
        listed += f"<li>... and {len(paths) - LISTED_SKIPPED} more</li>"
    return (
        f'<div class="warning">Warning: {int(count)} test image{"s" if count != 1 else ""} '
        f"{'were' if count != 1 else 'was'} also in the model's training data. {_esc(fate)}"
        + (f"<ul>{listed}</ul>" if listed else "")
        + "</div>"
    )


def _summary(report: dict[str, Any]) -> str:
    model, data = report["model"], report["data"]
    calibration = model.get("calibration") or {}
    model_rows = [
        ("name", model.get("name")),
        ("path", model.get("path")),
        ("temperature", format_value(calibration.get("temperature"))),
        ("melanoma alert threshold", format_value(calibration.get("alert_threshold"))),
        ("target sensitivity", format_value(calibration.get("target_sensitivity"))),
        ("calibration fitted on", calibration.get("fitted_on")),
    ]
    data_rows = [
        ("sources", ", ".join(data.get("sources", [])) or None),
        ("split", data.get("split")),
        ("images found", data.get("images_found")),
        ("images scored", data.get("scored")),
        ("files skipped", len(data.get("skipped", []))),
        ("taxonomy", report.get("taxonomy")),
        ("classes", ", ".join(report.get("classes", []))),
        ("label mapping", report.get("mapping_note") or None),
    ]
    return f"<h2>Model</h2>{_rows(model_rows)}<h2>Data</h2>{_rows(data_rows)}"


def _headline(results: dict[str, dict[str, Any]]) -> str:
    names = list(results)
    sets = [results[n] for n in names]
    levels = sorted(
        {key for r in sets for key in r["melanoma"].get("specificity_at_sensitivity", {})},
        key=float,
    )
    rows: list[tuple[str, list[str]]] = [
        ("images", [format_value(r.get("images")) for r in sets]),
        ("accuracy", [format_estimate(r.get("accuracy")) for r in sets]),
        ("balanced accuracy", [format_estimate(r.get("balanced_accuracy")) for r in sets]),
        ("macro AUC", [format_estimate(r.get("macro_auc")) for r in sets]),
        ("melanoma positives", [format_value(r["melanoma"].get("positives")) for r in sets]),
        ("melanoma AUC", [format_estimate(r["melanoma"].get("auc")) for r in sets]),
        ("alert threshold", [format_value(r["melanoma"].get("threshold")) for r in sets]),
        (
            "sensitivity at alert threshold",
            [format_estimate(r["melanoma"].get("sensitivity")) for r in sets],
        ),
        (
            "specificity at alert threshold",
            [format_estimate(r["melanoma"].get("specificity")) for r in sets],
        ),
        *(
            (
                f"specificity at {float(level):.0%} sensitivity",
                [
                    format_value(r["melanoma"].get("specificity_at_sensitivity", {}).get(level))
                    for r in sets
                ],
            )
            for level in levels
        ),
        (
            "ECE (uncalibrated)",
            [format_value(r.get("calibration", {}).get("ece_uncalibrated")) for r in sets],
        ),
        (
            "ECE (temperature-scaled)",
            [format_value(r.get("calibration", {}).get("ece_calibrated")) for r in sets],
        ),
    ]
    head = "".join(f"<th>{_esc(n)}</th>" for n in names)
    body = "".join(
        f"<tr><th>{_esc(label)}</th>"
        + "".join(f'<td class="num">{_esc(v)}</td>' for v in values)
        + "</tr>"
        for label, values in rows
    )
    return f"<h2>Headline figures</h2><table><tr><th></th>{head}</tr>{body}</table>"


def _gate(gate: dict[str, Any], scored: int | None) -> str:
    if not gate.get("available"):
        return "<h2>Dermoscopy gate</h2><p>This model has no dermoscopy gate.</p>"
    text = (f"<h2>Dermoscopy gate</h2><p>{gate['flagged']} of {_esc(scored)} scored images "
            f"flagged: {gate['not_dermoscopy']} not dermoscopy, {gate['poor_quality']} poor "
            "quality. The figures above include them; below, without them.</p>")
    listed = "".join(f"<tr><td>{_esc(f['path'])}</td><td>{_esc(f['verdict'])}</td>"
                     f"<td>{_esc(f['reason'])}</td></tr>"
                     for f in gate.get("flagged_images", [])[:LISTED_SKIPPED])
    if listed:
        text += f"<table><tr><th>path</th><th>verdict</th><th>reason</th></tr>{listed}</table>"
    without = gate.get("results_without_flagged")
    if without:
        text += _headline(without).replace("<h2>Headline figures</h2>",
                                           "<h3>Without the flagged images</h3>")
    return text


def _per_class(metrics: dict[str, Any]) -> str:
    columns = ("precision", "recall", "f1", "auc")
    body = "".join(
        f"<tr><th>{_esc(DISPLAY_NAMES.get(name, name))}</th>"
        + "".join(f'<td class="num">{_esc(format_value(row.get(c)))}</td>' for c in columns)
        + f'<td class="num">{_esc(format_value(row.get("support")))}</td></tr>'
        for name, row in metrics.get("per_class", {}).items()
    )
    return (
        "<h2>Per class (plain)</h2><table><tr><th>class</th><th>precision</th><th>recall</th>"
        f"<th>F1</th><th>AUC</th><th>support</th></tr>{body}</table>"
    )


def _figures(images: Sequence[Path], out_dir: Path) -> str:
    figures = []
    for image in images:
        try:
            relative = Path(image).resolve().relative_to(out_dir.resolve()).as_posix()
        except ValueError:
            relative = Path(image).name
        figures.append(
            f'<figure><img src="{_esc(quote(relative))}" alt="{_esc(relative)}">'
            f"<figcaption>{_esc(relative)}</figcaption></figure>"
        )
    return "<h2>Figures</h2>" + "".join(figures) if figures else ""


def _skipped(skipped: list[dict[str, str]]) -> str:
    rows = "".join(
        f"<tr><td>{_esc(s.get('path'))}</td><td>{_esc(s.get('reason'))}</td></tr>"
        for s in skipped[:LISTED_SKIPPED]
    )
    more = (
        f"<p>... and {len(skipped) - LISTED_SKIPPED} more</p>"
        if len(skipped) > LISTED_SKIPPED
        else ""
    )
    table = f"<table><tr><th>path</th><th>reason</th></tr>{rows}</table>" if rows else ""
    return f"<h2>Skipped files: {len(skipped)}</h2>{table}{more}"


def write_html_report(report: dict[str, Any], out_dir: Path, images: Sequence[Path]) -> Path:
    """Write ``out_dir/report.html``: one page with inline CSS and no external assets.

    Args:
        report: the evaluation report dict (``schema_version`` 1).
        out_dir: folder of the page; created if missing.
        images: PNGs inside ``out_dir``, referenced by relative path.

    Returns:
        The path of the page.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    data = report["data"]
    results = report["results"]
    page = html_page("melanoscan evaluation", (
        "<h1>melanoscan evaluation</h1>"
        '<p class="notice">Research tool, not a medical device.</p>'
        + _overlap_warning(data.get("training_overlap") or {})
        + _summary(report)
        + _headline(results)
        + _gate(report.get("gate") or {}, data.get("scored"))
        + (_per_class(results["plain"]) if "plain" in results else "")
        + _figures(images, out_dir)
        + _skipped(data.get("skipped", []))
    ), _CSS)
    path = out_dir / "report.html"
    write_text(path, printable(page))
    return path
