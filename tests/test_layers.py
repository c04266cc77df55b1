"""The package graph has one layer order (README, "Layout"); every import points down it."""

from __future__ import annotations

import ast
import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "melanoscan"

# Bottom to top; a unit may import only units on lower lines (the same line: not each other).
LAYERS: list[set[str]] = [
    {"taxonomy", "files", "progress", "process", "report_page"},
    {"calibration"},
    {"models"},
    {"preprocess"},
    {"data"},
    {"bundle"},
    {"gate"},
    {"inference"},
    {"evaluation"},
    {"training"},
    {"serving"},
    {"cli"},
    {"__main__", "melanoscan"},
]
RANK = {unit: rank for rank, units in enumerate(LAYERS) for unit in units}


def _unit(path: Path) -> str:
    relative = path.relative_to(PACKAGE)
    if relative.parts == ("__init__.py",):
        return "melanoscan"
    return relative.parts[0].removesuffix(".py")


def _imported_units(tree: ast.AST) -> list[tuple[str, int]]:
    """Every melanoscan unit a module imports, at any depth (functions, TYPE_CHECKING too)."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            parts = node.module.split(".")
            if parts[0] != "melanoscan":
                continue
            if len(parts) > 1:
                found.append((parts[1], node.lineno))
            else:  # from melanoscan import taxonomy / __version__ (the root only holds that)
                found += [(a.name, node.lineno) for a in node.names if a.name in RANK]
        elif isinstance(node, ast.Import):
            found += [(a.name.split(".")[1], node.lineno) for a in node.names
                      if a.name.startswith("melanoscan.")]
    return found


def test_every_unit_has_a_layer() -> None:
    units = {_unit(path) for path in PACKAGE.rglob("*.py")}
    assert units <= set(RANK), f"give these a layer: {sorted(units - set(RANK))}"


def test_imports_only_point_down() -> None:
    upward = []
    for path in sorted(PACKAGE.rglob("*.py")):
        unit = _unit(path)
        for target, line in _imported_units(ast.parse(path.read_text())):
            if target != unit and RANK[target] >= RANK[unit]:
                upward.append(f"{path.relative_to(PACKAGE)}:{line} {unit} -> {target}")
    assert not upward, "imports against the layer order:\n" + "\n".join(upward)


def test_the_checker_sees_an_upward_import() -> None:
    tree = ast.parse("def f():\n    from melanoscan.training.config import TrainConfig\n")
    assert _imported_units(tree) == [("training", 2)]
    assert RANK["training"] > RANK["data"]


def test_every_html_report_uses_the_one_page_template() -> None:
    reports = ["data/audit_report.py", "evaluation/report.py", "inference/triage_report.py"]
    for name in reports:
        source = (PACKAGE / name).read_text()
        assert "html_page(" in source, name
        assert "<!doctype" not in source.lower() and "<style>" not in source, name


def _layout_entries() -> dict[str, str]:
    """The README "Layout" tree under ``src/melanoscan/``: entry name -> its text."""
    readme = (PACKAGE.parents[1] / "README.md").read_text()
    block = readme.split("## Layout", 1)[1].split("```", 2)[1]
    tree = block.split("src/melanoscan/\n", 1)[1]
    entries: dict[str, str] = {}
    name = ""
    for line in tree.splitlines():
        if not line.startswith("  "):  # the next top-level folder (tests/, benchmarks/...)
            break
        if not line.startswith("   "):  # "  name   text": a new entry
            name, _, text = line.strip().partition(" ")
            entries[name] = text.strip()
        else:  # a continuation of the entry above
            entries[name] += " " + line.strip()
    return entries


def test_the_readme_layout_lists_every_module() -> None:
    entries = _layout_entries()
    missing = []
    for path in sorted(PACKAGE.rglob("*")):
        relative = path.relative_to(PACKAGE)
        if "__pycache__" in relative.parts or (path.is_file() and path.suffix != ".py"):
            continue
        top = relative.parts[0] + ("/" if len(relative.parts) > 1 or path.is_dir() else "")
        if top not in entries:
            missing.append(top)
        elif len(relative.parts) > 1 and relative.name != "__init__.py":
            # A module or folder of a package: named in the package's entry.
            shown = relative.name + ("/" if path.is_dir() else "")
            if not re.search(rf"(^|\s){re.escape(shown)}(\s|$)", entries[top]):
                missing.append(str(relative) + ("/" if path.is_dir() else ""))
    assert not missing, f"README Layout does not list: {sorted(set(missing))}"


def test_the_layout_parser_reads_entries_and_continuations() -> None:
    entries = _layout_entries()
    assert entries["taxonomy.py"].startswith("the 9 classes")
    assert "background.py" in entries["serving/"] and "static/" in entries["serving/"]
