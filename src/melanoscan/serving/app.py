"""The FastAPI app: prediction API, model card, health check, the web page and the API page.

Every request is checked against :class:`ServeLimits`: its body as it streams in and its
admission by :class:`~melanoscan.serving.guard.RequestGuard`, its images by
:func:`~melanoscan.serving.uploads.read_image`. Reading, decoding and inference run in a worker
thread, at most ``max_concurrent`` requests at a time; a request whose client disconnects stops
waiting (and between steps, running). Bad input is always a 4xx with a JSON body
``{"error": {"code", "message", "filename"}}``, never a 500.
"""

from __future__ import annotations

import asyncio
import base64
import io
import re
import threading
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from importlib import resources
from typing import Annotated, Any, TypeVar

from fastapi import FastAPI, File, Query, Request, UploadFile
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles
from PIL import Image
from starlette.concurrency import run_in_threadpool

from melanoscan import __version__
from melanoscan.inference.predictor import Prediction, Predictor
from melanoscan.inference.render import model_fields
from melanoscan.serving.errors import (
    ERROR_RESPONSES,
    ClientGone,
    UploadError,
    install_error_handlers,
)
from melanoscan.serving.guard import Admission, RequestGuard
from melanoscan.serving.limits import ServeLimits
from melanoscan.serving.uploads import read_image

__all__ = ["NOTICE", "create_app"]

NOTICE = (
    "Research tool, not a medical device. It does not diagnose; a dermatologist must review "
    "every image, with or without an alert."
)
STATIC_DIR = resources.files("melanoscan.serving") / "static"
T = TypeVar("T")
DISCONNECT_POLL_S = 0.1
"""How often a waiting or running request checks that its client is still connected."""
# A POSIX, home or Windows absolute path, not inside a relative path or a URL.
ABSOLUTE_PATH = re.compile(r"(?<![\w.:/\\~-])(?:~|[A-Za-z]:)?[/\\][^\s,;'\"()]+")


class _Service:
    """The predictor, the limits, and the bookkeeping of requests in flight."""

    def __init__(self, predictor: Predictor, limits: ServeLimits) -> None:
        self.predictor = predictor
        self.limits = limits
        self.admission = Admission(limits.max_admitted)
        self.slots = asyncio.Semaphore(limits.max_concurrent)
        self._explainer: Any = None
        # Grad-CAM hooks one shared torch model: two explanations at once would mix them up.
        self._explain_lock = threading.Lock()

    async def limited(
        self, work: Callable[[threading.Event], T], gone: Callable[[], Awaitable[bool]]
    ) -> T:
        """Run ``work`` in a thread once a slot is free, unless the client has gone.

        Args:
            work: called with an event that is set if the client disconnects while it runs.
            gone: whether the client has disconnected, polled while waiting and running.

        Raises:
            ClientGone: the client disconnected before its work started.
        """
        await self._take_slot(gone)
        abandoned = threading.Event()
        watcher = asyncio.ensure_future(_watch(gone, abandoned))
        try:
            return await run_in_threadpool(work, abandoned)
        finally:
            watcher.cancel()
            self.slots.release()

    async def _take_slot(self, gone: Callable[[], Awaitable[bool]]) -> None:
        acquire = asyncio.ensure_future(self.slots.acquire())
        try:
            while not acquire.done():
                await asyncio.wait({acquire}, timeout=DISCONNECT_POLL_S)
                if not acquire.done() and await gone():
                    raise ClientGone
            if await gone():  # the slot came at last, but nobody waits for the answer
                raise ClientGone
        except BaseException:
            if acquire.done() and not acquire.cancelled():
                self.slots.release()
            else:
                acquire.cancel()  # a slot granted meanwhile is given back by acquire itself
            raise

    def model_info(self) -> dict[str, Any]:
        predictor, metadata = self.predictor, self.predictor.metadata
        return {
            "name": predictor.name,
            "version": predictor.version,
            "melanoscan_version": __version__,
            "backend": predictor.backend,
            "classes": predictor.classes,
            "image_size": predictor.preprocessing.image_size,
            "alert_threshold": predictor.alert_threshold,
            "calibration": public_paths(metadata.calibration),
            "gate": public_paths(metadata.gate) or None,
            "metrics": public_paths({"validation": metadata.validation_metrics,
                                     "test": metadata.test_metrics}),
            "limits": asdict(self.limits),
            "notice": NOTICE,
        }

    def predict(
        self, uploads: list[tuple[str, bytes]], gradcam: bool, gradcam_class: str | None,
        gate: bool = True, abandoned: threading.Event | None = None, tta: bool = False,
    ) -> dict[str, Any]:
        """Decode and predict every upload; refused files are listed under ``skipped``.

        Each entry carries ``index``, its position in the request, as file names may repeat.
        Images the dermoscopy gate refuses get no Grad-CAM (there is no class to explain).
        Stops with :class:`ClientGone` between steps once ``abandoned`` is set.
        """
        abandoned = abandoned or threading.Event()
        kept, images, skipped = [], [], []
        for index, (filename, data) in enumerate(uploads):
            _stop_if_set(abandoned)
            try:
                images.append(read_image(data, filename, self.limits,
                                         self.predictor.preprocessing.decode_min_side))
                kept.append((index, filename))
            except UploadError as exc:
                skipped.append((index, exc))
        if not images:
            first = skipped[0][1]
            if len(skipped) > 1:
                first.message = f"{first.message} (and {len(skipped) - 1} other file(s) refused)"
            raise first
        _stop_if_set(abandoned)
        predictions = self.predictor.predict(images, gate=gate, tta=tta)
        results = []
        for (index, name), image, prediction in zip(kept, images, predictions, strict=True):
            result = {"index": index, **prediction.to_dict(), "path": name}
            if gradcam and not (prediction.flagged and not prediction.gate_overridden):
                _stop_if_set(abandoned)
                result["gradcam"] = self._gradcam(image, prediction, gradcam_class)
            results.append(result)
        return {
            "model": model_fields(self.predictor),
            "predictions": results,
            "skipped": [{"index": index, "path": e.filename, "code": e.code, "reason": e.message}
                        for index, e in skipped],
        }

    def _gradcam(
        self, image: Image.Image, prediction: Prediction, target: str | None
    ) -> dict[str, Any]:
        from melanoscan.inference.gradcam import explain

        with self._explain_lock:
            if self._explainer is None:
                from melanoscan.bundle import load_bundle

                self._explainer = load_bundle(self.predictor.path)
            explanation = explain(self._explainer, image, target or prediction.predicted_class)
        buffer = io.BytesIO()
        Image.fromarray(explanation.overlay).save(buffer, format="PNG")
        return {"target_class": explanation.target_class,
                "png_base64": base64.b64encode(buffer.getvalue()).decode("ascii")}


def create_app(predictor: Predictor, limits: ServeLimits | None = None) -> FastAPI:
    """The service around one loaded model.

    Args:
        predictor: the model to serve.
        limits: request limits (default :class:`ServeLimits`).
    """
    service = _Service(predictor, limits or ServeLimits())
    app = FastAPI(
        title="melanoscan",
        version=__version__,
        description=f"Melanoma triage of dermoscopy images. {NOTICE}",
        docs_url=None,  # FastAPI's pages load Swagger UI / ReDoc from a CDN: ours is local
        redoc_url=None,
    )
    app.state.service = service
    install_error_handlers(app)
    app.add_middleware(RequestGuard, limits=service.limits, admission=service.admission)

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(str(STATIC_DIR / "index.html"))

    @app.get("/docs", include_in_schema=False)
    def docs() -> FileResponse:
        return FileResponse(str(STATIC_DIR / "api.html"))

    @app.get("/healthz")
    def healthz() -> dict[str, Any]:
        """Liveness and readiness: 200 once the model is loaded (it loads before serving)."""
        return {"status": "ok", "model": predictor.name, "backend": predictor.backend}

    @app.get("/v1/model")
    def model() -> dict[str, Any]:
        """The model's name, version, classes, alert threshold, the metrics of its card and the
        service's limits. Paths of the data it was trained on are shown by name only."""
        return service.model_info()

    @app.post("/v1/predict", responses=ERROR_RESPONSES)
    async def predict(
        request: Request,
        images: Annotated[
            list[UploadFile], File(description="One or more images (repeat the field).")
        ],
        gradcam: Annotated[
            bool, Query(description="Add a Grad-CAM overlay (PNG, base64) per image.")
        ] = False,
        gradcam_class: Annotated[
            str | None, Query(description="Class to explain (default: the predicted class).")
        ] = None,
        gate: Annotated[
            bool,
            Query(description="false: score images the dermoscopy gate flags anyway (marked)."),
        ] = True,
        tta: Annotated[
            bool,
            Query(description="Average over the 8 flips and 90-degree rotations (8x the cost)."),
        ] = False,
    ) -> dict[str, Any]:
        """Predict one or several images: the same fields as ``melanoscan predict --format json``.

        Files that are refused (not an image, truncated, too big) are listed under ``skipped``
        while the others are predicted; when every file is refused the answer is a 4xx. An image
        the dermoscopy gate flags (not dermoscopy, poor quality) is answered with 200, its
        ``headline`` and ``gate_reason`` say why, and it gets no melanoma alert.
        """
        if gradcam_class is not None and gradcam_class not in predictor.classes:
            raise UploadError(
                422, "unknown_class",
                f"gradcam_class {gradcam_class!r} is not one of: {', '.join(predictor.classes)}",
            )

        def work(abandoned: threading.Event) -> dict[str, Any]:
            uploads = [(upload.filename or f"image {i + 1}", _read(upload, service.limits))
                       for i, upload in enumerate(images)]
            return service.predict(uploads, gradcam, gradcam_class, gate, abandoned, tta)

        return await service.limited(work, request.is_disconnected)

    app.mount("/static", StaticFiles(directory=str(STATIC_DIR)), name="static")
    return app


def public_paths(value: Any) -> Any:
    """``value`` with every absolute file path in its strings (and keys) cut to its last name.

    A user-trained bundle records where its data was (``/home/me/data/isic9``); the service
    shows ``isic9``. Relative paths and URLs are left as they are.
    """
    if isinstance(value, str):
        return ABSOLUTE_PATH.sub(lambda m: re.split(r"[/\\]", m.group().rstrip("/\\"))[-1],
                                 value)
    if isinstance(value, dict):
        return {public_paths(key): public_paths(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [public_paths(item) for item in value]
    return value


async def _watch(gone: Callable[[], Awaitable[bool]], abandoned: threading.Event) -> None:
    """Set ``abandoned`` once the client has gone."""
    while not await gone():
        await asyncio.sleep(DISCONNECT_POLL_S)
    abandoned.set()


def _stop_if_set(abandoned: threading.Event) -> None:
    if abandoned.is_set():
        raise ClientGone


def _read(upload: UploadFile, limits: ServeLimits) -> bytes:
    """The upload's bytes, reading at most one byte past the limit."""
    upload.file.seek(0)
    return upload.file.read(limits.max_file_bytes + 1)
