"""The uvicorn settings of ``melanoscan serve``: connection limits and timeouts.

uvicorn times out idle keep-alive connections but not a client that opens a connection and
sends its request line and headers slowly (or never): :class:`TimedH11Protocol` closes such a
connection after ``header_timeout_s``. Body timeouts are the guard's (:mod:`.guard`).
"""

from __future__ import annotations

import asyncio
from functools import partial
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from melanoscan.serving.limits import MAX_HEADER_BYTES, ServeLimits

__all__ = ["TimedH11Protocol", "uvicorn_options"]


class TimedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a deadline for each request's line and headers.

    The deadline starts when the connection opens and again when a response ends; it is met
    once a request's headers are complete. The connection is closed when it passes.

    Args:
        header_timeout_s: seconds allowed.
        **kwargs: for :class:`H11Protocol`.
    """

    def __init__(self, *args: Any, header_timeout_s: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.header_timeout_s = header_timeout_s
        self._header_deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._start_header_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_header_deadline()
        super().connection_lost(exc)

    def handle_events(self) -> None:
        super().handle_events()
        if self.conn.their_state is not h11.IDLE:  # a request's headers are in
            self._cancel_header_deadline()

    def on_response_complete(self) -> None:
        if not self.transport.is_closing():
            self._start_header_deadline()
        super().on_response_complete()  # may read a pipelined request (handle_events)

    def _start_header_deadline(self) -> None:
        self._cancel_header_deadline()
        self._header_deadline = self.loop.call_later(self.header_timeout_s, self._headers_late)

    def _cancel_header_deadline(self) -> None:
        if self._header_deadline is not None:
            self._header_deadline.cancel()
            self._header_deadline = None

    def _headers_late(self) -> None:
        self._header_deadline = None
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self.transport.close()


def uvicorn_options(limits: ServeLimits) -> dict[str, Any]:
    """Keyword arguments of ``uvicorn.run`` that enforce the connection limits of ``limits``."""
    return {
        "http": partial(TimedH11Protocol, header_timeout_s=limits.header_timeout_s),
        "limit_concurrency": limits.max_connections,
        "timeout_keep_alive": limits.keep_alive_s,
        "h11_max_incomplete_event_size": MAX_HEADER_BYTES,
    }
