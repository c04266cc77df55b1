"""Shared by the benchmark scripts: write results JSON and a section of docs/BENCHMARKS.md."""

from __future__ import annotations

import json
import os
import platform
import re
import shlex
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from melanoscan.process import configure_process

configure_process()  # the benchmarks are entry points, like the CLI: before torch loads

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
DOC = ROOT / "docs" / "BENCHMARKS.md"
DOC_HEADER = """# Benchmarks

Every table below is written by a script in `benchmarks/`; the command that produced it is
given with it. Accuracy figures name their test set and its size and carry 95% bootstrap
confidence intervals.
"""


def machine() -> dict[str, Any]:
    import torch

    cores = len(os.sched_getaffinity(0))
    return {
        "cpu_cores": cores,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def command() -> str:
    return "python " + " ".join(shlex.quote(a) for a in [Path(sys.argv[0]).name and
                                                          f"benchmarks/{Path(sys.argv[0]).name}",
                                                          *sys.argv[1:]])


def write_results(name: str, payload: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(payload, indent=2) + "\n")
    return path


def update_section(name: str, title: str, body: str) -> None:
    """Replace (or append) the section between this benchmark's markers in docs/BENCHMARKS.md."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    section = f"{start}\n## {title}\n\n{body.strip()}\n{end}"
    text = DOC.read_text() if DOC.exists() else DOC_HEADER
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.DOTALL)
    text = pattern.sub(lambda _: section, text) if pattern.search(text) else (
        text.rstrip() + "\n\n" + section + "\n")
    DOC.write_text(text)


def shown_path(path: Path | str) -> str:
    """A path as the docs write it: relative to the repository when it lies beside it."""
    relative = os.path.relpath(Path(path).resolve(), ROOT)
    return str(path) if relative.startswith(("../../", "/")) else relative
