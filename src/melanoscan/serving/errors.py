"""The one error shape of the service, ``{"error": {"code", "message", "filename"}}``, and the
handlers that give it to every refusal: ours, FastAPI's validation, Starlette's 404/405 and
body-parsing errors, and unexpected exceptions."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException

__all__ = ["ERROR_RESPONSES", "ClientGone", "UploadError", "error_response",
           "install_error_handlers"]

log = logging.getLogger(__name__)

# Codes for Starlette's own HTTP errors (unknown path, wrong method, unparsable body).
HTTP_ERROR_CODES = {400: "malformed_body", 404: "not_found", 405: "method_not_allowed"}


class UploadError(Exception):
    """A request or one of its files refused, as an HTTP status and a JSON error body.

    Args:
        status: the HTTP status (4xx, or 503 when busy).
        code: a stable machine-readable name, e.g. ``not_an_image``.
        message: what was wrong, for a person.
        filename: the file it concerns, when it concerns one.
    """

    def __init__(self, status: int, code: str, message: str, filename: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.filename = filename

    def to_dict(self) -> dict[str, str | None]:
        return {"code": self.code, "message": self.message, "filename": self.filename}


class ClientGone(UploadError):
    """The client disconnected: its request is dropped without running (nginx's 499)."""

    def __init__(self) -> None:
        super().__init__(499, "client_gone", "the client disconnected; the request was dropped")


class ErrorDetail(BaseModel):
    code: str
    message: str
    filename: str | None = None


class ErrorBody(BaseModel):
    """The body of every 4xx and 5xx answer of the service."""

    error: ErrorDetail


def _documented(description: str) -> dict[str, object]:
    return {"model": ErrorBody, "description": description}


ERROR_RESPONSES: dict[int | str, dict[str, object]] = {
    400: _documented("empty_file, bad_image, malformed_body"),
    408: _documented("body_timeout: the body did not arrive in time"),
    413: _documented("file_too_large, image_too_large, too_many_images, request_too_large"),
    415: _documented("not_an_image, unsupported_format"),
    422: _documented("invalid_request, unknown_class, extreme_aspect_ratio"),
    503: _documented("busy: too many requests admitted (Retry-After: 1)"),
}
"""The error answers of ``POST /v1/predict``, for its OpenAPI description."""


def error_response(error: UploadError, close: bool = False) -> JSONResponse:
    """The JSON answer for ``error``; ``close`` asks the server to drop the connection after it
    (the rest of an unread body is then never received)."""
    headers = {"Retry-After": "1"} if error.status == 503 else {}
    if close:
        headers["Connection"] = "close"
    return JSONResponse({"error": error.to_dict()}, status_code=error.status, headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    """Answer every refusal and crash of ``app`` in the error shape."""

    @app.exception_handler(UploadError)
    async def refused(_request: Request, error: UploadError) -> JSONResponse:
        return error_response(error)

    @app.exception_handler(HTTPException)
    async def http_error(_request: Request, error: HTTPException) -> JSONResponse:
        message = str(error.detail)
        if error.__cause__ is not None and str(error.__cause__):
            message = f"{message}: {error.__cause__}"
        code = HTTP_ERROR_CODES.get(error.status_code, f"http_{error.status_code}")
        response = error_response(UploadError(error.status_code, code, message))
        response.headers.update(error.headers or {})  # e.g. Allow on a 405
        return response

    @app.exception_handler(RequestValidationError)
    async def invalid(_request: Request, error: RequestValidationError) -> JSONResponse:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in item.get('loc', ()))}: {item.get('msg', '')}"
            for item in error.errors()
        )
        message = (f"{problems}. Send multipart/form-data with one or more files in the field "
                   "'images'.")
        return error_response(UploadError(422, "invalid_request", message))

    @app.exception_handler(Exception)
    async def crashed(_request: Request, error: Exception) -> JSONResponse:
        log.exception("unexpected error while serving a request")
        return error_response(
            UploadError(500, "internal_error", f"{type(error).__name__}: {error}")
        )
