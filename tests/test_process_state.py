"""Importing melanoscan changes no process-wide state; the command line sets what it needs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from melanoscan.cli import app

# Third-party packages are imported before the snapshot (what they do on import is not ours),
# except albumentations: melanoscan imports it with its update check off, and must restore the
# environment after.
STATE_CHECK = """
import importlib, os, pkgutil, warnings
import cv2, fastapi, lightning, matplotlib, onnxruntime, pandas, sklearn, torch

def state():
    backend = dict.__getitem__(matplotlib.rcParams, "backend")  # without resolving it
    return dict(os.environ), [repr(f) for f in warnings.filters], repr(backend)

before = state()
import melanoscan
names = [m.name for m in pkgutil.walk_packages(melanoscan.__path__, "melanoscan.")]
for name in names:
    if name != "melanoscan.__main__":  # that one runs the command line
        importlib.import_module(name)
after = state()
assert len(names) > 40, names
for what, old, new in zip(("os.environ", "warnings.filters", "matplotlib backend"), before,
                          after):
    assert old == new, f"{what} changed on import: {old} -> {new}"
print("unchanged")
"""

LIGHT_IMPORTS = """
import importlib, pkgutil, sys
import melanoscan.inference, melanoscan.serving
import melanoscan.evaluation.recalibrate, melanoscan.evaluation.gate_fit  # melanoscan calibrate
for package in (melanoscan.inference, melanoscan.serving):
    for module in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
        importlib.import_module(module.name)
heavy = {"lightning", "albumentations", "matplotlib"}
print(sorted({m.split(".")[0] for m in sys.modules} & heavy))
"""


def _run(code: str) -> str:
    unset = ("OMP_WAIT_POLICY", "MPLBACKEND", "NO_ALBUMENTATIONS_UPDATE")
    env = {k: v for k, v in os.environ.items() if k not in unset}
    src = str(Path(__file__).resolve().parents[1] / "src")
    env["PYTHONPATH"] = os.pathsep.join([src, env.get("PYTHONPATH", "")])
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.strip()


def test_importing_every_module_leaves_the_process_alone() -> None:
    assert _run(STATE_CHECK) == "unchanged"


def test_prediction_and_serving_import_without_training_or_plotting_packages() -> None:
    assert _run(LIGHT_IMPORTS) == "[]"


def test_the_command_line_sets_the_openmp_wait_policy(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("OMP_WAIT_POLICY", "unset")  # so that monkeypatch restores the original
    monkeypatch.delenv("OMP_WAIT_POLICY")
    CliRunner().invoke(app, ["predict", str(tmp_path / "none")])
    assert os.environ["OMP_WAIT_POLICY"] == "PASSIVE"
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    CliRunner().invoke(app, ["predict", str(tmp_path / "none")])
    assert os.environ["OMP_WAIT_POLICY"] == "ACTIVE"  # an explicit choice wins
