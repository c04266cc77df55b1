"""An ASGI middleware that bounds a request while its body streams in, before anything buffers it.

For every HTTP request it checks, as the bytes arrive: the body size (413
``request_too_large``), the number of multipart parts (413 ``too_many_images``) and the size of
each (413 ``file_too_large``), and the time the body takes (408 ``body_timeout``). A POST is
admitted only while fewer than :attr:`ServeLimits.max_admitted` requests are in the service
(uploading, waiting or running); the next gets 503 ``busy`` before its body is read. A refusal is
sent as soon as the limit is passed, and any answer sent before the body was read in full closes
the connection, so the rest of the body is never received.
"""

from __future__ import annotations

import re
import time
from typing import Any, NoReturn

import anyio
from python_multipart.multipart import parse_options_header
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from melanoscan.serving.errors import UploadError, error_response
from melanoscan.serving.limits import ServeLimits

__all__ = ["Admission", "RequestGuard"]


class Admission:
    """Counts the requests in the service and admits at most ``capacity`` at once.

    Args:
        capacity: requests admitted at once.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.admitted = 0

    def enter(self) -> bool:
        """Admit one more request, or return False when full."""
        if self.admitted >= self.capacity:
            return False
        self.admitted += 1
        return True

    def leave(self) -> None:
        self.admitted -= 1


class _Refused(Exception):
    """Raised from ``receive`` to stop the app reading a body the guard has refused."""


class _PartCounter:
    """Counts multipart parts and the bytes of the current one, across chunk boundaries."""

    def __init__(self, boundary: bytes) -> None:
        # A delimiter and the two bytes after it: "--" ends the body, anything else opens a part.
        self._pattern = re.compile(re.escape(b"\r\n--" + boundary) + b"(..)", re.DOTALL)
        self._keep = len(boundary) + 5  # one byte shorter than a match: no match is seen twice
        self._tail = b"\r\n"  # the body opens with a delimiter that lacks its leading CRLF
        self._fed = len(self._tail)
        self._part_start = 0
        self.parts = 0

    def feed(self, chunk: bytes) -> None:
        data = self._tail + chunk
        offset = self._fed - len(self._tail)
        self._fed += len(chunk)
        for match in self._pattern.finditer(data):
            self._part_start = offset + match.end()
            if match.group(1) != b"--":
                self.parts += 1
        self._tail = data[-self._keep:]

    @property
    def part_bytes(self) -> int:
        """Bytes received since the last delimiter."""
        return self._fed - self._part_start


def _boundary(scope: Scope) -> bytes | None:
    content_type = _header(scope, b"content-type")
    kind, options = parse_options_header(content_type)
    if kind != b"multipart/form-data":
        return None
    return options.get(b"boundary") or None


def _header(scope: Scope, name: bytes) -> bytes:
    return next((value for key, value in scope["headers"] if key.lower() == name), b"")


class _Exchange:
    """One request under the guard: its wrapped ``receive`` and ``send``."""

    def __init__(self, scope: Scope, receive: Receive, send: Send, limits: ServeLimits) -> None:
        self.scope, self._receive, self._send, self.limits = scope, receive, send, limits
        length = _header(scope, b"content-length")
        self.declared = int(length) if length.isdigit() else None
        self.has_body = bool(self.declared) or bool(_header(scope, b"transfer-encoding"))
        self.body_done = not self.has_body
        self.received = 0
        self.deadline = time.monotonic() + limits.body_timeout_s
        boundary = _boundary(scope)
        self.parts = _PartCounter(boundary) if boundary else None
        self.refusal: UploadError | None = None
        self.started = False
        self.replaced = False

    async def receive(self) -> Message:
        if self.refusal is not None:
            raise _Refused
        if self.body_done:  # e.g. Request.is_disconnected() once the body is in
            return await self._receive()
        try:
            with anyio.fail_after(max(self.deadline - time.monotonic(), 0)):
                message = await self._receive()
        except TimeoutError:
            self._refuse(408, "body_timeout",
                         f"the request body did not arrive within {self.limits.body_timeout_s} s")
        if message["type"] != "http.request":
            return message
        body = message.get("body", b"")
        self.received += len(body)
        if self.parts is not None:  # first: its refusals say more than the total's
            self.parts.feed(body)
            if self.parts.parts > self.limits.max_images:
                self._refuse(413, "too_many_images",
                             f"the request has more than {self.limits.max_images} parts; the "
                             f"limit is {self.limits.max_images} images per request")
            if self.parts.part_bytes > self.limits.max_part_bytes:
                self._refuse(413, "file_too_large",
                             f"a part has over {self.parts.part_bytes:,} bytes; the limit is "
                             f"{self.limits.max_file_bytes:,} bytes a file")
        if self.received > self.limits.max_request_bytes:
            self._refuse(413, "request_too_large", self.too_large(self.received, over=True))
        self.body_done = not message.get("more_body", False)
        return message

    def _refuse(self, status: int, code: str, message: str) -> NoReturn:
        self.refusal = UploadError(status, code, message)
        raise _Refused

    def too_large(self, size: int, over: bool = False) -> str:
        """Why a body of ``size`` bytes (or more, when ``over``) is refused."""
        limits = self.limits
        return (f"the request body has {'over ' if over else ''}{size:,} bytes; the limit is "
                f"{limits.max_request_bytes:,} ({limits.max_images} files of at most "
                f"{limits.max_file_bytes:,} bytes)")

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.started = True
            if self.refusal is not None:  # the app's answer to the interrupted body
                self.replaced = True
                await self.respond(self.refusal)
                return
            if not self.body_done:
                headers: list[Any] = [*message.get("headers", []), (b"connection", b"close")]
                message = {**message, "headers": headers}
        elif self.replaced:
            return
        await self._send(message)

    async def respond(self, error: UploadError) -> None:
        """Answer ``error`` directly, closing the connection if the body is not all in."""
        await error_response(error, close=not self.body_done)(self.scope, self._receive,
                                                              self._send)


class RequestGuard:
    """ASGI middleware enforcing :class:`ServeLimits` on bodies and admission as they stream.

    Args:
        app: the application.
        limits: the limits.
        admission: shared count of requests in the service.
    """

    def __init__(self, app: ASGIApp, limits: ServeLimits, admission: Admission) -> None:
        self.app, self.limits, self.admission = app, limits, admission

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        exchange = _Exchange(scope, receive, send, self.limits)
        if exchange.declared is not None and exchange.declared > self.limits.max_request_bytes:
            await exchange.respond(UploadError(
                413, "request_too_large", exchange.too_large(exchange.declared)))
            return
        admitted = scope["method"] != "POST" or self.admission.enter()
        if not admitted:
            await exchange.respond(UploadError(
                503, "busy", f"{self.admission.capacity} requests are already in the service; "
                "retry shortly"))
            return
        try:
            await self.app(scope, exchange.receive, exchange.send)
        except Exception:
            if exchange.refusal is None or exchange.started:
                raise
            await exchange.respond(exchange.refusal)
        finally:
            if scope["method"] == "POST":
                self.admission.leave()
