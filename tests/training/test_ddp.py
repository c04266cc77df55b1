"""Two CPU processes (DDP over gloo) on a tiny dataset produce one bundle."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from melanoscan import load_bundle
from tests.training.conftest import make_class_folders


@pytest.mark.slow
def test_two_process_ddp_run_writes_one_bundle(tmp_path: Path) -> None:
    data = make_class_folders(tmp_path / "data", per_class=8)
    run = tmp_path / "run"
    command = [
        sys.executable, "-m", "melanoscan", "train", "--data", str(data), "--out", str(run),
        "--model", "assignment_cnn", "--no-pretrained", "--image-size", "32", "--epochs", "2",
        "--batch-size", "4", "--devices", "2",
        "--set", "accelerator=cpu", "--set", "data.num_workers=0", "--set", "data.cache=memory",
    ]
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run(command, capture_output=True, text=True, timeout=240, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "distributed_backend=gloo" in done.stderr
    assert "Starting with 2 processes" in done.stderr
    assert done.stdout.count("Model bundle:") == 1
    bundle = load_bundle(run / "bundle")
    assert bundle.metadata.training["config"]["devices"] == 2
    assert len(list(run.glob("**/bundle.json"))) == 1
