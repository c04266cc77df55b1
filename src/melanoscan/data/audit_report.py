"""Rendering an :class:`AuditReport`: terminal summary, plots and a self-contained HTML page."""

from __future__ import annotations

import html
import json
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure
from PIL import Image
from rich.console import Console
from rich.table import Table

from melanoscan import taxonomy
from melanoscan.data.audit import AuditReport, ImageGroup, SourcePair
from melanoscan.data.images import ImageDecodeError, load_rgb
from melanoscan.files import printable, write_text
from melanoscan.report_page import html_page

SAMPLES_PER_CLASS = 6
LISTED_GROUPS = 10


def print_summary(report: AuditReport, console: Console) -> None:
    """A readable terminal summary: counts table, balance, and each finding with examples."""
    splits = [s for s in report.counts if s != "all"]
    table = Table(title=f"Images per class ({report.total_images} images)")
    table.add_column("class")
    for split in [*splits, "all"]:
        table.add_column(split, justify="right")
    for name in taxonomy.CLASSES:
        table.add_row(name, *(str(report.counts[s][name]) for s in [*splits, "all"]))
    console.print(table)
    balance = report.class_balance
    if balance["least"]:
        least, most = balance["least"], balance["most"]
        console.print(
            f"Least represented: [bold]{least['class']}[/] ({least['count']}); "
            f"most: [bold]{most['class']}[/] ({most['count']}); "
            f"imbalance ratio {balance['imbalance_ratio']}"
        )
    if balance["missing_classes"]:
        console.print(f"[yellow]Classes with no image:[/] {', '.join(balance['missing_classes'])}")
    _print_groups(console, "Exact duplicates (same decoded pixels)", report.exact_duplicates)
    _print_groups(
        console,
        f"Near duplicates (pHash distance <= {report.near_duplicate_max_distance})",
        report.near_duplicates,
    )
    _print_groups(console, "Images shared between splits", report.cross_split)
    _print_groups(
        console, "Label conflicts (same image, different classes)", report.label_conflicts
    )
    if report.source_pairs:
        _print_source_pairs(console, report)
    if report.skipped:
        console.print(f"[red]Skipped files: {len(report.skipped)}[/]")
        for item in report.skipped[:LISTED_GROUPS]:
            console.print(f"  {item['path']}: {item['reason']}")
        _more(console, len(report.skipped))
    else:
        console.print("Skipped files: 0")
    stats = report.image_stats
    console.print(
        f"Image sizes: {stats['distinct_sizes']} distinct, most common "
        f"{', '.join(f'{k} ({v})' for k, v in list(stats['most_common_sizes'].items())[:3])}; "
        f"modes {stats['modes']}; formats {stats['formats']}"
    )


def _print_groups(
    console: Console, title: str, groups: list[ImageGroup], *, show_source: bool = False
) -> None:
    images = sum(len(g.entries) for g in groups)
    style = "yellow" if groups else "green"
    console.print(f"[{style}]{title}: {len(groups)} groups, {images} images[/]")
    for group in groups[:LISTED_GROUPS]:
        entries = "; ".join(
            f"{Path(e['path']).name} ["
            + (f"{Path(str(e['source'])).name}: " if show_source else "")
            + f"{e['split']}/{e['label']}]"
            for e in group.entries
        )
        console.print(f"  {entries}", markup=False, highlight=False)
    _more(console, len(groups))


def _print_source_pairs(console: Console, report: AuditReport) -> None:
    """The between-sources section: one row per pair that shares anything, then the conflicts."""
    sharing = [p for p in report.source_pairs if p.shared_images or p.shared_lesions]
    style = "yellow" if sharing else "green"
    copies = sum(len(g.entries) for g in report.cross_source)
    console.print(
        f"[{style}]Images shared between sources: {len(report.cross_source)} images "
        f"({copies} files); {len(sharing)} of {len(report.source_pairs)} source pairs share "
        "images or lesions[/]"
    )
    if sharing:
        table = Table(title="Source pairs sharing images or lesions")
        for column, right in (("source A", False), ("source B", False), ("images", True),
                              ("A split / B split", False), ("lesions", True),
                              ("disagree", True), ("A label / B label", False)):
            table.add_column(column, justify="right" if right else "left", overflow="fold")
        for pair in sharing:
            table.add_row(*pair.sources, str(pair.shared_images),
                          _nested_text(pair.shared_by_split), str(pair.shared_lesions),
                          str(pair.label_disagreements), _nested_text(pair.disagreeing_labels))
        console.print(table)
    _print_groups(console, "Label disagreements between sources", report.cross_source_conflicts,
                  show_source=True)


def _nested_text(counts: dict[str, dict[str, int]]) -> str:
    items = sorted(
        ((f"{outer} / {inner}", n) for outer, row in counts.items() for inner, n in row.items()),
        key=lambda item: -item[1],
    )
    return "\n".join(f"{name}: {n}" for name, n in items) or "-"


def _more(console: Console, total: int) -> None:
    if total > LISTED_GROUPS:
        console.print(f"  ... and {total - LISTED_GROUPS} more (see --json or --out)")


def write_report(report: AuditReport, manifest_table: pd.DataFrame, out_dir: Path) -> list[Path]:
    """Write ``report.json``, the plots and ``report.html`` into ``out_dir``; return the files."""
    out_dir.mkdir(parents=True, exist_ok=True)
    files = [
        _write_json(report, out_dir / "report.json"),
        plot_class_distribution(report, out_dir / "class_distribution.png"),
        plot_samples(manifest_table, out_dir / "samples.png"),
    ]
    files.append(_write_html(report, out_dir / "report.html"))
    return files


def _write_json(report: AuditReport, path: Path) -> Path:
    write_text(path, json.dumps(report.to_dict(), indent=2))
    return path


def plot_class_distribution(report: AuditReport, path: Path) -> Path:
    """Write :func:`class_distribution_figure` to the PNG ``path``; return ``path``."""
    class_distribution_figure(report).savefig(path, dpi=110)
    return path


def class_distribution_figure(report: AuditReport) -> Figure:
    """Horizontal bar chart of images per class, one bar segment per split.

    Returns:
        The figure: one bar container per split (stacked, in the report's split order), the
        classes from the last of ``taxonomy.CLASSES`` at the bottom to the first at the top,
        and each class's total written at the end of its bar.
    """
    splits = [s for s in report.counts if s != "all"]
    frame = pd.DataFrame({s: report.counts[s] for s in splits}).reindex(list(taxonomy.CLASSES))
    fig = Figure(figsize=(9, 4.5))
    ax = fig.subplots()
    rows = frame.rename(index=taxonomy.DISPLAY_NAMES).iloc[::-1].fillna(0)
    left = pd.Series(0.0, index=rows.index)
    for split in rows.columns:  # stacked bars, drawn directly: pandas plotting uses pyplot
        ax.barh(rows.index, rows[split], left=left, label=split)
        left = left + rows[split]
    ax.legend()
    ax.set_xlabel("images")
    ax.set_title("Class distribution")
    for index, total in enumerate(frame.sum(axis=1).iloc[::-1]):
        ax.text(total, index, f" {int(total)}", va="center", fontsize=8)
    fig.tight_layout()
    return fig


def plot_samples(table: pd.DataFrame, path: Path, per_class: int = SAMPLES_PER_CLASS) -> Path:
    """Write :func:`samples_figure` to the PNG ``path``; return ``path``."""
    samples_figure(table, per_class).savefig(path, dpi=100)
    return path


def samples_figure(table: pd.DataFrame, per_class: int = SAMPLES_PER_CLASS) -> Figure:
    """A grid with a few random images of every class (one row per class).

    Returns:
        The figure: ``len(taxonomy.CLASSES)`` rows of ``per_class`` axes, each showing one
        image of the row's class (as many as it has, readable ones only), the class's display
        name as the row's label.
    """
    fig = Figure(figsize=(per_class * 1.3, len(taxonomy.CLASSES) * 1.35))
    axes = fig.subplots(len(taxonomy.CLASSES), per_class, squeeze=False)
    for row, name in enumerate(taxonomy.CLASSES):
        rows = table[table["label"] == name]
        chosen = rows.sample(min(per_class, len(rows)), random_state=0)["path"].tolist()
        for col in range(per_class):
            ax = axes[row, col]
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
            if col < len(chosen):
                try:
                    image = load_rgb(chosen[col])
                    image.thumbnail((128, 128), Image.Resampling.BILINEAR)
                    ax.imshow(image)
                except ImageDecodeError:
                    pass
        axes[row, 0].set_ylabel(taxonomy.DISPLAY_NAMES[name], rotation=0, ha="right", fontsize=8)
    fig.suptitle("Samples per class")
    fig.tight_layout()
    return fig


def _write_html(report: AuditReport, path: Path) -> Path:
    def esc(value: object) -> str:
        return html.escape(str(value))

    splits = [s for s in report.counts if s != "all"]
    head = "".join(f"<th>{esc(s)}</th>" for s in [*splits, "all"])
    body = "".join(
        f"<tr><td>{esc(name)}</td>"
        + "".join(f"<td>{report.counts[s][name]}</td>" for s in [*splits, "all"])
        + "</tr>"
        for name in taxonomy.CLASSES
    )

    def groups(title: str, items: list[ImageGroup]) -> str:
        rows = "".join(
            "<tr><td>"
            + "<br>".join(
                f"{esc(e['path'])} <em>[{esc(e['split'])} / {esc(e['label'])}]</em>"
                for e in g.entries
            )
            + f"</td><td>{esc(', '.join(g.by))}</td></tr>"
            for g in items
        )
        return f"<h2>{esc(title)}: {len(items)} groups</h2>" + (
            f"<table><tr><th>images</th><th>linked by</th></tr>{rows}</table>" if items else ""
        )

    def pairs(items: list[SourcePair]) -> str:
        def nested(counts: dict[str, dict[str, int]]) -> str:
            return "<br>".join(
                f"{esc(outer)} / {esc(inner)}: {n}"
                for outer, row in counts.items()
                for inner, n in row.items()
            )

        rows = "".join(
            f"<tr><td>{esc(p.sources[0])}</td><td>{esc(p.sources[1])}</td>"
            f"<td>{p.shared_images}</td><td>{nested(p.shared_by_split)}</td>"
            f"<td>{p.shared_lesions}</td><td>{p.label_disagreements}</td>"
            f"<td>{nested(p.disagreeing_labels)}</td></tr>"
            for p in items
        )
        return (
            "<h2>Sources compared pairwise</h2><table><tr><th>source A</th><th>source B</th>"
            "<th>shared images</th><th>A split / B split</th><th>shared lesions</th>"
            f"<th>label disagreements</th><th>A label / B label</th></tr>{rows}</table>"
            if items else ""
        )

    skipped = "".join(
        f"<tr><td>{esc(s['path'])}</td><td>{esc(s['reason'])}</td></tr>" for s in report.skipped
    )
    balance = report.class_balance
    body = f"""<h1>Dataset audit</h1><p>Sources: {esc(", ".join(report.sources))}</p>
<p>{report.total_images} images, {len(report.skipped)} skipped.
Imbalance ratio {esc(balance["imbalance_ratio"])} (least: {esc(balance["least"])},
most: {esc(balance["most"])}).</p>
<table><tr><th>class</th>{head}</tr>{body}</table>
<img src="class_distribution.png" alt="class distribution"><img src="samples.png" alt="samples">
{groups("Exact duplicates", report.exact_duplicates)}
{groups(f"Near duplicates (pHash <= {report.near_duplicate_max_distance})", report.near_duplicates)}
{groups("Images shared between splits", report.cross_split)}
{groups("Label conflicts", report.label_conflicts)}
{pairs(report.source_pairs)}
{groups("Label disagreements between sources", report.cross_source_conflicts)}
{groups("Images shared between sources", report.cross_source)}
<h2>Skipped files: {len(report.skipped)}</h2>
{f"<table><tr><th>path</th><th>reason</th></tr>{skipped}</table>" if skipped else ""}
<h2>Image statistics</h2><pre>{esc(json.dumps(report.image_stats, indent=2))}</pre>"""
    write_text(path, printable(html_page("melanoscan audit", body)))
    return path
