"""`melanoscan train` on the command line: a tiny model, a few generated images, seconds."""

from __future__ import annotations

import io
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from melanoscan import load_bundle
from melanoscan.cli import app
from melanoscan.training.config import load_config, save_config
from tests.conftest import EXAMPLES

runner = CliRunner()
TINY = ["--model", "assignment_cnn", "--no-pretrained", "--image-size", "32", "--epochs", "1",
        "--batch-size", "8", "-q", "--set", "data.num_workers=0", "--set", "data.cache=memory"]


def test_train_on_the_examples_then_predict(tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = runner.invoke(app, ["train", "--data", str(EXAMPLES), "--out", str(out), *TINY,
                                 "--set", "optim.label_smoothing=0.1"])
    assert result.exit_code == 0, result.output
    assert "Model bundle:" in result.stdout
    config = load_config(out / "config.yaml")
    assert (config.model.name, config.optim.label_smoothing, config.epochs) == (
        "assignment_cnn", 0.1, 1)
    bundle = load_bundle(out / "bundle")
    assert bundle.preprocessing.image_size == 32


def test_runs_with_the_same_seed_are_identical(tiny_data: Path, tmp_path: Path) -> None:
    weights = []
    for name in ("a", "b"):
        args = ["train", "--data", str(tiny_data), "--out", str(tmp_path / name), *TINY,
                "--epochs", "2", "--set", "deterministic=true"]
        assert runner.invoke(app, args).exit_code == 0
        weights.append(torch.load(tmp_path / name / "bundle" / "weights.pt", weights_only=True))
    for key, value in weights[0].items():
        assert torch.equal(value, weights[1][key]), key
    assert (tmp_path / "a" / "metrics.csv").read_text().split(",")[:11] == (
        tmp_path / "b" / "metrics.csv").read_text().split(",")[:11]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--set", "optim.lrate=1"], "unknown config key 'optim.lrate'"),
        (["--set", "epochs"], "must look like key.sub=value"),
        (["--balance", "smote"], "balance.strategy must be one of"),
        (["--model", "resnet50"], "unknown model 'resnet50'"),
        (["--set", "model.kwargs.foo=1"], "model.kwargs.foo: not an argument of assignment_cnn"),
        (["--set", "model.kwargs.dropout=5"], "model.kwargs.dropout must be in [0, 1), got 5"),
        (["--set", "data.num_workers=-2"], "data.num_workers must be >= 0"),
        (["--image-size", "7"], "model.image_size must be at least 32"),
        (["--pretrained"], "model.pretrained: assignment_cnn has no pretrained weights; set "
                           "model.pretrained: false (--no-pretrained)"),
    ],
)
def test_bad_options_exit_2(tiny_data: Path, tmp_path: Path, args: list[str], message: str) -> None:
    result = runner.invoke(app, ["train", "--data", str(tiny_data), "--out", str(tmp_path / "r"),
                                 *TINY, *args])
    assert result.exit_code == 2
    assert isinstance(result.exception, SystemExit)
    assert message in " ".join(result.output.split())


def test_naming_a_model_without_weights_trains_it_from_scratch(
    tiny_data: Path, tmp_path: Path
) -> None:
    tiny = [a for a in TINY if a != "--no-pretrained"]  # the default config says pretrained
    result = runner.invoke(app, ["train", "--data", str(tiny_data), "--out", str(tmp_path / "r"),
                                 *tiny])
    assert result.exit_code == 0, result.output
    assert "assignment_cnn has no pretrained weights: training from scratch" in " ".join(
        result.stderr.split())
    assert load_config(tmp_path / "r" / "config.yaml").model.pretrained is False


def test_bad_data_exit_2(tmp_path: Path) -> None:
    result = runner.invoke(app, ["train", "--data", str(tmp_path / "missing"),
                                 "--out", str(tmp_path / "r"), *TINY])
    assert result.exit_code == 2
    assert "data source not found" in result.output


def test_resume_takes_no_options(tmp_path: Path) -> None:
    result = runner.invoke(app, ["train", "--out", str(tmp_path), "--resume", "--epochs", "3"])
    assert result.exit_code == 2
    assert "saved config" in result.output


def test_ctrl_c_exits_130_and_the_run_resumes(tiny_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    command = [sys.executable, "-m", "melanoscan", "train", "--data", str(tiny_data),
               "--out", str(out), *TINY, "--epochs", "200"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (out / "checkpoints" / "last.ckpt").exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr[-2000:]
    assert "resume with: melanoscan train" in " ".join(stderr.split())
    epochs_done = len(pd.read_csv(out / "metrics.csv"))
    assert 1 <= epochs_done < 200
    config = out / "config.yaml"
    config.write_text(config.read_text().replace("epochs: 200", f"epochs: {epochs_done + 1}"))
    result = runner.invoke(app, ["train", "--out", str(out), "--resume", "-q"])
    assert result.exit_code == 0, result.output
    assert len(pd.read_csv(out / "metrics.csv")) == epochs_done + 1


def test_damaged_checkpoint_is_refused_without_a_traceback(tmp_path: Path) -> None:
    out = tmp_path / "run"
    (out / "checkpoints").mkdir(parents=True)
    save_config(load_config(None), out / "config.yaml")
    (out / "run.json").write_text(json.dumps({"data": [str(tmp_path / "data")]}))
    checkpoint = io.BytesIO()
    torch.save({"epoch": 3, "state_dict": {"w": torch.zeros(1000)}}, checkpoint)
    half = checkpoint.getvalue()[: len(checkpoint.getvalue()) // 2]  # cut off by a full disk
    (out / "checkpoints" / "last.ckpt").write_bytes(half)
    result = runner.invoke(app, ["train", "--out", str(out), "--resume", "-q"])
    assert result.exit_code == 2
    text = " ".join(result.output.split())
    assert f"cannot resume {out}: checkpoints/last.ckpt is damaged" in text
    assert "Traceback" not in text
