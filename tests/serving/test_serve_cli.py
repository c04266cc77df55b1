"""``melanoscan serve``: option checks, and the app each worker process builds."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from melanoscan.cli import app
from melanoscan.cli.serving import ENV_BACKEND, ENV_LIMITS, ENV_MODEL, app_from_environment
from melanoscan.serving import ServeLimits
from melanoscan.serving.background import ServerStartError, serve_in_background
from melanoscan.serving.limits import MAX_HEADER_BYTES
from melanoscan.serving.server import TimedH11Protocol


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


def test_serve_runs_uvicorn_with_the_connection_limits(
    onnx_bundle: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import uvicorn

    calls: list[dict] = []
    monkeypatch.setattr(uvicorn, "run", lambda *args, **kwargs: calls.append(kwargs))
    result = CliRunner().invoke(app, ["serve", "--model", str(onnx_bundle), "--max-connections",
                                      "7", "--header-timeout", "3", "--keep-alive", "2"])
    assert result.exit_code == 0, result.output
    (options,) = calls
    assert (options["limit_concurrency"], options["timeout_keep_alive"]) == (7, 2)
    assert options["http"].func is TimedH11Protocol
    assert options["http"].keywords == {"header_timeout_s": 3}
    assert options["h11_max_incomplete_event_size"] == MAX_HEADER_BYTES


def test_worker_processes_build_the_app_from_the_environment(
    onnx_bundle: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ENV_MODEL, str(onnx_bundle))
    monkeypatch.setenv(ENV_BACKEND, "torch")
    monkeypatch.setenv(ENV_LIMITS, ServeLimits(max_images=3).to_json())
    client = TestClient(app_from_environment())
    assert client.get("/healthz").json()["backend"] == "torch"
    assert client.get("/v1/model").json()["limits"]["max_images"] == 3


def test_background_server_answers_and_stops(onnx_bundle: Path) -> None:
    with (
        serve_in_background(onnx_bundle, ["--max-images", "3"], start_timeout_s=60) as url,
        urllib.request.urlopen(f"{url}/v1/model", timeout=10) as response,
    ):
        model = json.load(response)
    assert model["limits"]["max_images"] == 3
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(f"{url}/healthz", timeout=2)


def test_background_server_that_cannot_start_reports_why(tmp_path: Path) -> None:
    with (
        pytest.raises(ServerStartError, match="exited with code 2") as failure,
        serve_in_background(tmp_path / "missing"),
    ):
        pytest.fail("a missing bundle must not be served")
    assert "missing" in str(failure.value)
