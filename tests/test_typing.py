"""``mypy`` finds no type error in the package (configured in pyproject.toml, [tool.mypy])."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_mypy_is_clean_on_src() -> None:
    pytest.importorskip("mypy", reason="mypy is in the test extra: pip install -e '.[test]'")
    # The cache in the repository (git-ignored) makes later runs take seconds, not a minute.
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--config-file", str(ROOT / "pyproject.toml"),
         str(ROOT / "src" / "melanoscan")],
        cwd=ROOT, capture_output=True, text=True, timeout=1200, check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
