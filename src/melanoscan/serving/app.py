"""The FastAPI app: prediction API, model card, health check and the web page.

Every request is checked against :class:`ServeLimits`. Reading, decoding and inference run in a
worker thread, at most ``max_concurrent`` requests at a time; at most ``max_waiting`` more wait,
and beyond that the service answers 503 at once. Bad input is always a 4xx with a JSON body
``{"error": {"code", "message", "filename"}}``, never a 500.
"""

from __future__ import annotations

import asyncio
import base64
import io
import logging
import threading
from collections.abc import Callable
from importlib import resources
from typing import Annotated, Any, TypeVar

from fastapi import FastAPI, File, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from PIL import Image
from starlette.concurrency import run_in_threadpool

from melanoscan import __version__
from melanoscan.inference.predictor import Prediction, Predictor
from melanoscan.inference.render import model_fields
from melanoscan.serving.limits import ServeLimits
from melanoscan.serving.uploads import UploadError, read_image

__all__ = ["NOTICE", "create_app"]

NOTICE = (
    "Research tool, not a medical device. It does not diagnose; a dermatologist must review "
    "every image, with or without an alert."
)
STATIC_DIR = resources.files("melanoscan.serving") / "static"
log = logging.getLogger(__name__)
T = TypeVar("T")


class _Service:
    """The predictor, the limits, and the bookkeeping of requests in flight."""

    def __init__(self, predictor: Predictor, limits: ServeLimits) -> None:
        self.predictor = predictor
        self.limits = limits
        self.slots = asyncio.Semaphore(limits.max_concurrent)
        self.waiting = 0
        self._explainer: Any = None
        # Grad-CAM hooks one shared torch model: two explanations at once would mix them up.
        self._explain_lock = threading.Lock()

    async def limited(self, work: Callable[[], T]) -> T:
        """Run ``work`` in a thread once a slot is free; refuse at once when too many wait."""
        if self.waiting >= self.limits.max_waiting:
            raise UploadError(503, "busy", "too many requests are waiting; retry shortly")
        self.waiting += 1
        queued = True
        try:
            async with self.slots:
                self.waiting -= 1
                queued = False
                return await run_in_threadpool(work)
        finally:
            if queued:
                self.waiting -= 1

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
            "calibration": metadata.calibration,
            "gate": metadata.gate or None,
            "metrics": {"validation": metadata.validation_metrics, "test": metadata.test_metrics},
            "limits": {
                "max_file_bytes": self.limits.max_file_bytes,
                "max_images": self.limits.max_images,
                "max_pixels": self.limits.max_pixels,
                "max_side": self.limits.max_side,
            },
            "notice": NOTICE,
        }

    def predict(
        self, uploads: list[tuple[str, bytes]], gradcam: bool, gradcam_class: str | None,
        gate: bool = True,
    ) -> dict[str, Any]:
        """Decode and predict every upload; refused files are listed under ``skipped``.

        Each entry carries ``index``, its position in the request, as file names may repeat.
        Images the dermoscopy gate refuses get no Grad-CAM (there is no class to explain).
        """
        kept, images, skipped = [], [], []
        for index, (filename, data) in enumerate(uploads):
            try:
                images.append(read_image(data, filename, self.limits))
                kept.append((index, filename))
            except UploadError as exc:
                skipped.append((index, exc))
        if not images:
            first = skipped[0][1]
            if len(skipped) > 1:
                first.message = f"{first.message} (and {len(skipped) - 1} other file(s) refused)"
            raise first
        predictions = self.predictor.predict(images, gate=gate)
        results = []
        for (index, name), image, prediction in zip(kept, images, predictions, strict=True):
            result = {"index": index, **prediction.to_dict(), "path": name}
            if gradcam and not (prediction.flagged and not prediction.gate_overridden):
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
    )
    app.state.service = service
    _install_error_handlers(app)

    @app.middleware("http")
    async def refuse_oversized_bodies(request: Request, call_next: Any) -> Any:
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > service.limits.max_request_bytes:
            error = UploadError(
                413, "request_too_large",
                f"the request body has {int(declared):,} bytes; the limit is "
                f"{service.limits.max_request_bytes:,} ({service.limits.max_images} files of "
                f"at most {service.limits.max_file_bytes:,} bytes)",
            )
            return _error_response(error)
        return await call_next(request)

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(str(STATIC_DIR / "index.html"))

    @app.get("/healthz")
    def healthz() -> dict[str, Any]:
        """Liveness and readiness: 200 once the model is loaded (it loads before serving)."""
        return {"status": "ok", "model": predictor.name, "backend": predictor.backend}

    @app.get("/v1/model")
    def model() -> dict[str, Any]:
        """The model's name, version, classes, alert threshold and the metrics of its card."""
        return service.model_info()

    @app.post("/v1/predict")
    async def predict(
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
    ) -> dict[str, Any]:
        """Predict one or several images: the same fields as ``melanoscan predict --format json``.

        Files that are refused (not an image, truncated, too big) are listed under ``skipped``
        while the others are predicted; when every file is refused the answer is a 4xx. An image
        the dermoscopy gate flags (not dermoscopy, poor quality) is answered with 200, its
        ``headline`` and ``gate_reason`` say why, and it gets no melanoma alert.
        """
        if len(images) > service.limits.max_images:
            raise UploadError(
                413, "too_many_images",
                f"{len(images)} images sent; the limit is {service.limits.max_images} per request",
            )
        if gradcam_class is not None and gradcam_class not in predictor.classes:
            raise UploadError(
                422, "unknown_class",
                f"gradcam_class {gradcam_class!r} is not one of: {', '.join(predictor.classes)}",
            )

        def work() -> dict[str, Any]:
            uploads = [(upload.filename or f"image {i + 1}", _read(upload, service.limits))
                       for i, upload in enumerate(images)]
            return service.predict(uploads, gradcam, gradcam_class, gate)

        return await service.limited(work)

    app.mount("/static", StaticFiles(directory=str(STATIC_DIR)), name="static")
    return app


def _read(upload: UploadFile, limits: ServeLimits) -> bytes:
    """The upload's bytes, reading at most one byte past the limit."""
    upload.file.seek(0)
    return upload.file.read(limits.max_file_bytes + 1)


def _error_response(error: UploadError) -> JSONResponse:
    headers = {"Retry-After": "1"} if error.status == 503 else None
    return JSONResponse({"error": error.to_dict()}, status_code=error.status, headers=headers)


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(UploadError)
    async def refused(_request: Request, error: UploadError) -> JSONResponse:
        return _error_response(error)

    @app.exception_handler(RequestValidationError)
    async def invalid(_request: Request, error: RequestValidationError) -> JSONResponse:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in item.get('loc', ()))}: {item.get('msg', '')}"
            for item in error.errors()
        )
        message = (f"{problems}. Send multipart/form-data with one or more files in the field "
                   "'images'.")
        return _error_response(UploadError(422, "invalid_request", message))

    @app.exception_handler(Exception)
    async def crashed(_request: Request, error: Exception) -> JSONResponse:
        log.exception("unexpected error while serving a request")
        return _error_response(
            UploadError(500, "internal_error", f"{type(error).__name__}: {error}")
        )
