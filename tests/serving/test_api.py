"""Every endpoint of the service, and every kind of bad input it must refuse with a 4xx."""

from __future__ import annotations

import asyncio
import base64
import io
import struct
import threading
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from melanoscan.inference.predictor import Predictor
from melanoscan.serving import ServeLimits, create_app
from tests.conftest import EXAMPLES, lesion_image, random_image, text_page
from tests.serving.conftest import client_for, with_alert_threshold

PREDICTION_FIELDS = {"path", "headline", "predicted_class", "confidence", "melanoma_probability",
                     "melanoma_alert", "probabilities", "gate", "gate_score", "gate_reason",
                     "gate_overridden"}


def encoded(image: Image.Image, image_format: str = "JPEG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=image_format)
    return buffer.getvalue()


def upload(*files: tuple[str, bytes], field: str = "images") -> list:
    return [(field, (name, data, "application/octet-stream")) for name, data in files]


def assert_error(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code
    assert error["message"]
    return error


def test_healthz(client: TestClient, predictor: Predictor) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "model": predictor.name, "backend": "onnx"}


def test_model_card(client: TestClient, predictor: Predictor) -> None:
    info = client.get("/v1/model").json()
    assert info["name"] == predictor.name
    assert info["version"] == predictor.version
    assert info["classes"] == predictor.classes
    assert info["alert_threshold"] == pytest.approx(predictor.alert_threshold)
    assert info["metrics"]["validation"] == predictor.metadata.validation_metrics
    assert "not a medical device" in info["notice"]
    assert info["limits"]["max_images"] == ServeLimits().max_images


def test_openapi_documents_the_endpoints(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/v1/predict", "/v1/model", "/healthz"} <= set(paths)


def test_predict_matches_the_python_api(client: TestClient, predictor: Predictor) -> None:
    image = random_image(3, (64, 48))
    response = client.post("/v1/predict", files=upload(("lesion.jpg", encoded(image))))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"]["name"] == predictor.name
    assert body["skipped"] == []
    (result,) = body["predictions"]
    assert set(result) == PREDICTION_FIELDS | {"index"}
    assert (result["index"], result["path"]) == (0, "lesion.jpg")
    expected = predictor.predict([Image.open(io.BytesIO(encoded(image)))])[0]
    assert result["predicted_class"] == expected.predicted_class
    assert result["melanoma_alert"] == expected.melanoma_alert
    for name, probability in expected.probabilities.items():
        assert result["probabilities"][name] == pytest.approx(probability, abs=1e-6)


def test_several_images_with_gradcam(client: TestClient, predictor: Predictor) -> None:
    files = [(f"{i}.png", encoded(random_image(i, (40, 40)), "PNG")) for i in range(3)]
    response = client.post("/v1/predict", params={"gradcam": "true"}, files=upload(*files))
    assert response.status_code == 200, response.text
    results = response.json()["predictions"]
    assert [r["path"] for r in results] == ["0.png", "1.png", "2.png"]
    size = predictor.preprocessing.image_size
    for result in results:
        overlay = Image.open(io.BytesIO(base64.b64decode(result["gradcam"]["png_base64"])))
        assert overlay.format == "PNG"
        assert overlay.size == (size, size)
        assert result["gradcam"]["target_class"] == result["predicted_class"]


def test_gradcam_of_a_chosen_class(client: TestClient) -> None:
    files = upload(("a.png", encoded(random_image(1), "PNG")))
    response = client.post("/v1/predict", params={"gradcam": "true",
                                                  "gradcam_class": "melanoma"}, files=files)
    assert response.json()["predictions"][0]["gradcam"]["target_class"] == "melanoma"
    refused = client.post("/v1/predict", params={"gradcam_class": "freckle"}, files=files)
    assert_error(refused, 422, "unknown_class")


def test_content_is_sniffed_not_the_name(client: TestClient) -> None:
    png_named_jpg = ("photo.jpg", encoded(random_image(5), "PNG"), "text/plain")
    response = client.post("/v1/predict", files=[("images", png_named_jpg)])
    assert response.status_code == 200, response.text


def truncated_jpeg() -> bytes:
    data = encoded(random_image(7, (256, 256)))
    return data[: len(data) // 2]


def gif() -> bytes:
    return encoded(random_image(2), "GIF")


@pytest.mark.parametrize(
    ("name", "data", "status", "code"),
    [
        ("notes.jpg", b"these are not pixels, just text\n" * 10, 415, "not_an_image"),
        ("half.jpg", truncated_jpeg(), 400, "bad_image"),
        ("empty.jpg", b"", 400, "empty_file"),
        ("anim.gif", gif(), 415, "unsupported_format"),
    ],
)
def test_bad_files_get_a_4xx_and_the_server_keeps_serving(
    client: TestClient, name: str, data: bytes, status: int, code: str
) -> None:
    error = assert_error(client.post("/v1/predict", files=upload((name, data))), status, code)
    assert error["filename"] == name
    good = upload(("ok.png", encoded(random_image(0), "PNG")))
    assert client.post("/v1/predict", files=good).status_code == 200


def test_size_limits(predictor: Predictor) -> None:
    small = client_for(predictor, max_file_bytes=2_000, max_side=100, max_images=2)
    noise = np.random.default_rng(0).integers(0, 256, (60, 60, 3), dtype=np.uint8)
    big_file = encoded(Image.fromarray(noise), "PNG")
    assert len(big_file) > 2_000
    assert_error(small.post("/v1/predict", files=upload(("big.png", big_file))),
                 413, "file_too_large")
    wide = encoded(Image.new("RGB", (400, 10)), "PNG")
    assert len(wide) < 2_000
    assert_error(small.post("/v1/predict", files=upload(("wide.png", wide))),
                 413, "image_too_large")
    three = [(f"{i}.png", encoded(random_image(i, (16, 16)), "PNG")) for i in range(3)]
    error = assert_error(small.post("/v1/predict", files=upload(*three)), 413,
                         "too_many_images")
    assert "more than 2" in error["message"]
    too_long = small.post("/v1/predict", content=b"x" * 10,
                          headers={"content-length": str(10**9),
                                   "content-type": "multipart/form-data; boundary=x"})
    assert_error(too_long, 413, "request_too_large")


def test_pixel_limit_is_checked_before_decoding(predictor: Predictor) -> None:
    # A 10,000 x 10,000 PNG of one colour compresses to a few hundred KB but decodes to 300 MB.
    bomb = encoded(Image.new("L", (10_000, 10_000)), "PNG")
    strict = client_for(predictor, max_pixels=1_000_000)
    assert_error(strict.post("/v1/predict", files=upload(("bomb.png", bomb))),
                 413, "image_too_large")


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares ``width`` x ``height`` and holds no pixel data."""
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(
            ">I", zlib.crc32(kind + body))

    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b"")


def test_a_declared_giant_is_refused_from_its_header(client: TestClient) -> None:
    # 50,000 x 50,000 pixels: past PIL's own bomb guard, which refuses it while opening.
    response = client.post("/v1/predict", files=upload(("giant.png", png_header_only(50_000,
                                                                                     50_000))))
    assert_error(response, 413, "image_too_large")


@pytest.mark.parametrize(
    "request_kwargs",
    [
        {"files": upload(("a.png", encoded(random_image(0), "PNG")), field="file")},
        {"json": {"images": ["a.png"]}},
        {"data": {"images": "not a file"}},
        {},
    ],
    ids=["wrong-field", "json-body", "text-field", "no-body"],
)
def test_malformed_requests_get_422(client: TestClient, request_kwargs: dict) -> None:
    error = assert_error(client.post("/v1/predict", **request_kwargs), 422, "invalid_request")
    assert "images" in error["message"]


def test_one_bad_file_among_good_ones_is_skipped(client: TestClient) -> None:
    files = upload(("good.png", encoded(random_image(1), "PNG")), ("bad.jpg", b"nope"),
                   ("good2.png", encoded(random_image(2), "PNG")))
    body = client.post("/v1/predict", files=files).json()
    assert [(p["index"], p["path"]) for p in body["predictions"]] == [(0, "good.png"),
                                                                      (2, "good2.png")]
    assert body["skipped"] == [{"index": 1, "path": "bad.jpg", "code": "not_an_image",
                                "reason": "the content is not a recognised image"}]


def test_every_file_refused_names_the_others(client: TestClient) -> None:
    error = assert_error(client.post("/v1/predict", files=upload(("a", b"x"), ("b", b""))),
                         415, "not_an_image")
    assert "1 other file" in error["message"]


def test_alert_follows_the_bundle_threshold(onnx_bundle: Path, tmp_path: Path) -> None:
    image = ("x.png", encoded(random_image(9), "PNG"))
    for threshold, alert in ((0.0, True), (1.01, False)):
        bundle = with_alert_threshold(onnx_bundle, tmp_path / str(threshold), threshold)
        client = client_for(Predictor(bundle))
        assert client.get("/v1/model").json()["alert_threshold"] == threshold
        result = client.post("/v1/predict", files=upload(image)).json()["predictions"][0]
        assert result["melanoma_alert"] is alert


def test_a_flagged_image_is_answered_with_its_reason(gated_bundle: Path, tmp_path: Path) -> None:
    bundle = with_alert_threshold(gated_bundle, tmp_path / "always", 0.0)  # alert on all
    client = client_for(Predictor(bundle))
    assert client.get("/v1/model").json()["gate"]["fit_images"] == 120
    files = upload(("lesion.png", encoded(lesion_image(3), "PNG")),
                   ("page.png", encoded(text_page(), "PNG")),
                   ("flat.png", encoded(Image.new("RGB", (64, 64), (120, 80, 60)), "PNG")))
    body = client.post("/v1/predict?gradcam=true", files=files).json()
    lesion, page, flat = body["predictions"]
    assert lesion["gate"] == "ok" and lesion["melanoma_alert"] and "gradcam" in lesion
    assert lesion["headline"] == "melanoma suspected" or lesion["predicted_class"] == "melanoma"
    assert (page["gate"], page["headline"]) == ("not_dermoscopy", "not dermoscopy")
    assert (flat["gate"], flat["headline"]) == ("poor_quality", "poor quality")
    for refused in (page, flat):
        assert not refused["melanoma_alert"] and refused["gate_reason"]
        assert "gradcam" not in refused
    ungated = client.post("/v1/predict?gate=false", files=files).json()["predictions"]
    assert [p["gate_overridden"] for p in ungated] == [False, True, True]
    assert all(p["melanoma_alert"] for p in ungated)


def test_example_images_predict(client: TestClient) -> None:
    paths = sorted(EXAMPLES.glob("*/*.jpg"))[:4]
    files = upload(*((p.name, p.read_bytes()) for p in paths))
    body = client.post("/v1/predict", files=files).json()
    assert len(body["predictions"]) == len(paths)


def test_web_page_and_assets_are_served_locally(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200
    assert "not a medical device" in page.text
    for asset, kind in (("/static/app.js", "javascript"), ("/static/style.css", "css")):
        response = client.get(asset)
        assert response.status_code == 200
        assert kind in response.headers["content-type"]
        assert "http://" not in response.text and "https://" not in response.text
    assert "http://" not in page.text and "https://" not in page.text


class _BlockingService:
    """Runs ``limited`` jobs that wait on an event, counting how many run at once."""

    def __init__(self, predictor: Predictor, **limits: int) -> None:
        self.service = create_app(predictor, ServeLimits(**limits)).state.service
        self.release = threading.Event()
        self.running = 0
        self.most = 0
        self.lock = threading.Lock()

    def job(self, _abandoned: threading.Event) -> str:
        with self.lock:
            self.running += 1
            self.most = max(self.most, self.running)
        self.release.wait(timeout=10)
        time.sleep(0.01)
        with self.lock:
            self.running -= 1
        return "done"


async def _still_there() -> bool:
    return False


def test_concurrency_is_bounded(predictor: Predictor) -> None:
    blocking = _BlockingService(predictor, max_concurrent=2)

    async def burst() -> list[object]:
        tasks = [asyncio.ensure_future(blocking.service.limited(blocking.job, _still_there))
                 for _ in range(5)]
        await asyncio.sleep(0.2)
        blocking.release.set()
        return await asyncio.gather(*tasks)

    assert asyncio.run(burst()) == ["done"] * 5
    assert blocking.most == 2
    assert not blocking.service.slots.locked()


def test_bad_limits_are_refused() -> None:
    with pytest.raises(ValueError, match="max_images"):
        ServeLimits(max_images=0)
    assert ServeLimits.from_json(ServeLimits(max_side=7).to_json()).max_side == 7


def test_uint8_grey_and_rgba_uploads_are_accepted(client: TestClient) -> None:
    grey = Image.fromarray(np.full((30, 30), 128, dtype=np.uint8))
    rgba = Image.new("RGBA", (30, 30), (10, 200, 30, 128))
    files = upload(("grey.png", encoded(grey, "PNG")), ("rgba.png", encoded(rgba, "PNG")))
    assert len(client.post("/v1/predict", files=files).json()["predictions"]) == 2


def test_tta_answers_as_the_predictor_does(client: TestClient, predictor: Predictor) -> None:
    image = lesion_image(11)
    body = client.post("/v1/predict?tta=true", files=upload(("a.png", encoded(image, "PNG"))))
    answered = body.json()["predictions"][0]["probabilities"]
    expected = predictor.predict([image], tta=True)[0].probabilities
    plain = predictor.predict([image])[0].probabilities
    assert answered == pytest.approx(expected, abs=1e-6)
    assert answered != pytest.approx(plain, abs=1e-6)
