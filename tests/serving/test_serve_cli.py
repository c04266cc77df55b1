"""``melanoscan serve``: option checks, and the app each worker process builds."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from melanoscan.cli import app
from melanoscan.cli.serving import ENV_BACKEND, ENV_LIMITS, ENV_MODEL, app_from_environment
from melanoscan.serving import ServeLimits


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--model", "no/such/bundle"], "no/such/bundle"),
        (["--max-images", "0"], "max_images"),
        (["--workers", "0"], "--workers"),
        (["--backend", "tensorrt"], "backend"),
    ],
)
def test_bad_options_exit_2_before_serving(arguments: list[str], message: str) -> None:
    result = CliRunner().invoke(app, ["serve", *arguments])
    assert result.exit_code == 2, result.output
    assert message in result.output


def test_worker_processes_build_the_app_from_the_environment(
    onnx_bundle: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ENV_MODEL, str(onnx_bundle))
    monkeypatch.setenv(ENV_BACKEND, "torch")
    monkeypatch.setenv(ENV_LIMITS, ServeLimits(max_images=3).to_json())
    client = TestClient(app_from_environment())
    assert client.get("/healthz").json()["backend"] == "torch"
    assert client.get("/v1/model").json()["limits"]["max_images"] == 3
