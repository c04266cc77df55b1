"""The service stays bounded under abuse: extreme images, abandoned, oversized, many-part and
slow requests (issue 16). Loopback tests run the app under a real uvicorn in this process."""

from __future__ import annotations

import asyncio
import json
import select
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from melanoscan.bundle import read_metadata, write_metadata
from melanoscan.inference.predictor import Predictor
from melanoscan.serving import ServeLimits, create_app
from melanoscan.serving.app import public_paths
from melanoscan.serving.errors import ClientGone
from tests.conftest import random_image
from tests.serving.conftest import client_for
from tests.serving.live import (
    BOUNDARY,
    connect,
    live_server,
    multipart,
    post,
    read_response,
    request_head,
)
from tests.serving.test_api import assert_error, encoded, png_header_only, upload


def until(condition: Any, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


# 1. Extreme aspect ratios ----------------------------------------------------------------------

def test_an_extreme_aspect_ratio_is_refused_from_the_header(client: TestClient) -> None:
    # No pixel data at all: only a header check can answer 422 rather than bad_image.
    strip = png_header_only(12_000, 1)
    error = assert_error(client.post("/v1/predict", files=upload(("strip.png", strip))),
                         422, "extreme_aspect_ratio")
    assert "12000x1" in error["message"] and error["filename"] == "strip.png"
    at_the_limit = encoded(Image.new("RGB", (200, 20)), "PNG")
    assert client.post("/v1/predict", files=upload(("ok.png", at_the_limit))).status_code == 200


# 2. Abandoned requests -------------------------------------------------------------------------

class HeldPredictor:
    """The real predictor, but ``predict`` waits for ``release``; counts its calls."""

    def __init__(self, predictor: Predictor) -> None:
        self._predictor = predictor
        self.release = threading.Event()
        self.calls = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._predictor, name)

    def predict(self, images: list, **kwargs: Any) -> list:
        self.calls += 1
        self.release.wait(timeout=20)
        return self._predictor.predict(images, **kwargs)


def held_app(predictor: Predictor, **limits: int) -> tuple[Any, HeldPredictor, ServeLimits]:
    serve_limits = ServeLimits(**limits)
    app = create_app(predictor, serve_limits)
    held = HeldPredictor(predictor)
    app.state.service.predictor = held
    return app, held, serve_limits


def small_png(seed: int = 0) -> bytes:
    return encoded(random_image(seed, (32, 32)), "PNG")


def in_thread(port: int, body: bytes, answers: list) -> threading.Thread:
    thread = threading.Thread(target=lambda: answers.append(post(port, body)), daemon=True)
    thread.start()
    return thread


def test_requests_of_clients_that_left_free_their_place(predictor: Predictor) -> None:
    app, held, limits = held_app(predictor, max_concurrent=1, max_waiting=3)
    service = app.state.service
    body = multipart(("a.png", small_png()))
    with live_server(app, limits) as port:
        answers: list = []
        running = in_thread(port, body, answers)
        assert until(lambda: held.calls == 1)
        leaving = [connect(port) for _ in range(3)]
        for client in leaving:
            client.sendall(request_head(content_length=len(body)) + body)
        assert until(lambda: service.admission.admitted == 4)
        for client in leaving:
            client.close()
        assert until(lambda: service.admission.admitted == 1, timeout=3), "still waiting"
        late = in_thread(port, body, answers)  # admitted: the places are free again
        assert until(lambda: service.admission.admitted == 2)
        held.release.set()
        running.join(20)
        late.join(20)
    assert [status for status, _ in answers] == [200, 200]
    assert held.calls == 2  # the three that left never ran


def test_a_client_gone_while_waiting_never_runs(predictor: Predictor) -> None:
    service = create_app(predictor, ServeLimits(max_concurrent=1)).state.service
    ran: list[str] = []

    async def scenario() -> list[object]:
        release = asyncio.Event()
        gone = {"b": False}

        async def hold() -> str:
            await release.wait()
            return "a"

        async def never() -> bool:
            return False

        async def b_gone() -> bool:
            return gone["b"]

        first = asyncio.ensure_future(service.limited(lambda _: ran.append("a"), never))
        await asyncio.sleep(0)  # a holds the slot while its thread runs
        hold_slot = asyncio.ensure_future(service.slots.acquire())
        await asyncio.sleep(0.05)
        waiting = asyncio.ensure_future(service.limited(lambda _: ran.append("b"), b_gone))
        await asyncio.sleep(0.2)
        gone["b"] = True
        outcome = await asyncio.gather(asyncio.wait_for(waiting, 5), return_exceptions=True)
        await hold_slot
        service.slots.release()
        release.set()
        await first
        return outcome

    (outcome,) = asyncio.run(scenario())
    assert isinstance(outcome, ClientGone)
    assert ran == ["a"]
    assert not service.slots.locked()


# 3. Bodies bounded while they stream -----------------------------------------------------------

def run_asgi(app: Any, headers: dict[str, str], chunks: Any) -> tuple[list[dict], int]:
    """Call ``app`` with a POST /v1/predict whose body is ``chunks``; return what it sent and
    how many chunks it pulled."""
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
             "scheme": "http", "path": "/v1/predict", "raw_path": b"/v1/predict",
             "query_string": b"", "root_path": "", "client": ("127.0.0.1", 1),
             "server": ("127.0.0.1", 80),
             "headers": [(k.encode(), v.encode()) for k, v in headers.items()]}
    sent: list[dict] = []
    pulled = 0
    source = iter(chunks)

    async def receive() -> dict:
        nonlocal pulled
        chunk = next(source, None)
        if chunk is None:
            return {"type": "http.request", "body": b"", "more_body": False}
        pulled += 1
        return {"type": "http.request", "body": chunk, "more_body": True}

    async def send(message: dict) -> None:
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    return sent, pulled


def answer(sent: list[dict]) -> tuple[int, dict, dict]:
    start = sent[0]
    headers = {k.decode(): v.decode() for k, v in start["headers"]}
    return start["status"], headers, json.loads(b"".join(m.get("body", b"") for m in sent[1:]))


CHUNK = 10_000
MULTIPART = {"content-type": f"multipart/form-data; boundary={BOUNDARY}",
             "transfer-encoding": "chunked"}
ONE_HUGE_PART = multipart(("big.png", b"x" * CHUNK * 1000))
MANY_PARTS = multipart(*[(f"{i}.png", b"x" * 100) for i in range(1000)])


def chunks_of(body: bytes) -> Any:
    return (body[i:i + CHUNK] for i in range(0, len(body), CHUNK))


@pytest.mark.parametrize(
    ("headers", "chunks", "code"),
    [
        ({"content-type": "application/x-www-form-urlencoded", "transfer-encoding": "chunked"},
         (b"x" * CHUNK for _ in range(1000)), "request_too_large"),
        (MULTIPART, chunks_of(ONE_HUGE_PART), "file_too_large"),
        (MULTIPART, chunks_of(MANY_PARTS), "too_many_images"),
    ],
    ids=["chunked-oversize", "one-huge-part", "many-parts"],
)
def test_a_body_is_refused_as_soon_as_it_passes_a_limit(
    predictor: Predictor, headers: dict, chunks: Any, code: str
) -> None:
    limits = ServeLimits(max_file_bytes=50_000, max_images=3)
    sent, pulled = run_asgi(create_app(predictor, limits), headers, chunks)
    status, response_headers, body = answer(sent)
    assert (status, body["error"]["code"]) == (413, code)
    assert response_headers["connection"] == "close"  # the rest is never received
    assert pulled * CHUNK <= limits.max_request_bytes + CHUNK  # not the 10 MB sent


def test_an_oversized_chunked_upload_is_cut_off_on_the_wire(predictor: Predictor) -> None:
    limits = ServeLimits(max_file_bytes=50_000, max_images=2)
    with live_server(create_app(predictor, limits), limits) as port, connect(port) as client:
        opening = multipart(("big.png", b""))[:-len(BOUNDARY) - 8]  # a part that never ends
        client.sendall(request_head(transfer_encoding="chunked")
                       + b"%x\r\n%s\r\n" % (len(opening), opening))
        chunk, sent = b"x" * 65536, 0
        while sent < 200 * 2**20 and not select.select([client], [], [], 0)[0]:
            try:
                client.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += len(chunk)
        status, response = read_response(client)
    assert sent < 32 * 2**20, f"{sent:,} bytes went through before the refusal"
    if status:  # the answer may be lost to the reset of a closed connection
        assert status == 413 and b"file_too_large" in response


def test_a_full_service_refuses_before_reading_the_body(predictor: Predictor) -> None:
    app, held, limits = held_app(predictor, max_concurrent=1, max_waiting=1)
    body = multipart(("a.png", small_png()))
    with live_server(app, limits) as port:
        answers: list = []
        threads = [in_thread(port, body, answers) for _ in range(2)]
        assert until(lambda: app.state.service.admission.admitted == 2)
        with connect(port, timeout=5) as client:
            client.sendall(request_head(content_length=10 * 2**20) + body[:100])
            status, response = read_response(client)  # with 10 MB still to send
        held.release.set()
        for thread in threads:
            thread.join(20)
    assert status == 503 and b'"busy"' in response
    assert sorted(s for s, _ in answers) == [200, 200]


# 4. Slow connections ---------------------------------------------------------------------------

def closed_within(client: Any, seconds: float) -> bool:
    """Whether the server closes the connection within ``seconds``."""
    client.settimeout(seconds)
    try:
        return client.recv(1024) == b""
    except TimeoutError:
        return False


def test_slow_headers_and_idle_connections_are_closed(predictor: Predictor) -> None:
    limits = ServeLimits(header_timeout_s=1)
    with live_server(create_app(predictor, limits), limits) as port:
        with connect(port) as idle:
            assert closed_within(idle, 3)
        with connect(port) as slow:
            started = time.monotonic()
            for byte in request_head("/healthz", "GET")[:-4]:  # never ends its headers
                try:
                    slow.sendall(bytes([byte]))
                except (BrokenPipeError, ConnectionResetError):
                    break
                if select.select([slow], [], [], 0.05)[0]:
                    break
            assert closed_within(slow, 3)
            assert time.monotonic() - started < 4


def test_a_slow_body_is_timed_out(predictor: Predictor) -> None:
    limits = ServeLimits(body_timeout_s=1)
    with live_server(create_app(predictor, limits), limits) as port, connect(port) as client:
        client.sendall(request_head(content_length=1000) + b"--" + BOUNDARY.encode())
        status, response = read_response(client)
    assert status == 408 and b"body_timeout" in response


def test_connections_beyond_the_limit_get_503(predictor: Predictor) -> None:
    limits = ServeLimits(max_connections=3)
    with live_server(create_app(predictor, limits), limits) as port:
        idle = [connect(port) for _ in range(3)]
        with connect(port) as client:
            client.sendall(request_head("/healthz", "GET"))
            status, _ = read_response(client)
        for connection in idle:
            connection.close()
    assert status == 503


# 5 and 6. Local API page, one error shape, no absolute paths ------------------------------------

def test_the_api_page_is_local(client: TestClient) -> None:
    page = client.get("/docs")
    assert page.status_code == 200 and "/openapi.json" in page.text
    script = client.get("/static/api.js")
    assert script.status_code == 200
    for text in (page.text, script.text):
        assert "http://" not in text and "https://" not in text
    assert_error(client.get("/redoc"), 404, "not_found")


def test_framework_errors_have_the_error_shape(client: TestClient) -> None:
    assert_error(client.get("/nowhere"), 404, "not_found")
    assert_error(client.get("/static/nothing.js"), 404, "not_found")
    wrong_method = client.get("/v1/predict")
    assert_error(wrong_method, 405, "method_not_allowed")
    assert "POST" in wrong_method.headers["allow"]
    no_boundary = client.post("/v1/predict", content=b"--x\r\n",
                              headers={"content-type": "multipart/form-data"})
    error = assert_error(no_boundary, 400, "malformed_body")
    assert "boundary" in error["message"].lower()


def test_openapi_documents_the_error_answers(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    responses = spec["paths"]["/v1/predict"]["post"]["responses"]
    assert {"200", "400", "408", "413", "415", "422", "503"} <= set(responses)
    for status in ("413", "422", "503"):
        schema = responses[status]["content"]["application/json"]["schema"]
        assert schema["$ref"].endswith("/ErrorBody")
    assert "HTTPValidationError" not in json.dumps(spec)


def test_the_model_card_shows_data_by_name_not_path(onnx_bundle: Path, tmp_path: Path) -> None:
    import shutil

    bundle = tmp_path / "bundle"
    shutil.copytree(onnx_bundle, bundle)
    metadata = read_metadata(bundle)
    calibration = {**metadata.calibration,
                   "fitted_on": "validation split of /home/alice/runs/r1 (200 images)"}
    test_metrics = {"/home/alice/data/isic9": {"images": 5},
                    "C:\\Users\\alice\\ham10000": {"images": 7}}
    write_metadata(bundle, replace(metadata, calibration=calibration, test_metrics=test_metrics))
    info = client_for(Predictor(bundle)).get("/v1/model").json()
    assert "alice" not in json.dumps(info)
    assert info["calibration"]["fitted_on"] == "validation split of r1 (200 images)"
    assert set(info["metrics"]["test"]) == {"isic9", "ham10000"}
    assert info["limits"]["max_aspect_ratio"] == ServeLimits().max_aspect_ratio


def test_relative_paths_and_urls_are_kept() -> None:
    text = "../shared/data/isic9, isic9/Test and https://example.org/a/b; ~/data/x: /abs/y/"
    kept = "../shared/data/isic9, isic9/Test and https://example.org/a/b"
    assert public_paths(text) == f"{kept}; x: y"
