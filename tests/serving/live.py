"""The app under a real uvicorn on loopback, in this process, and raw HTTP clients for it."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn
from fastapi import FastAPI

from melanoscan.serving.background import free_port
from melanoscan.serving.limits import ServeLimits
from melanoscan.serving.server import uvicorn_options

BOUNDARY = "melanoscan-test-boundary"


@contextmanager
def live_server(app: FastAPI, limits: ServeLimits) -> Iterator[int]:
    """Serve ``app`` on 127.0.0.1 with the uvicorn options of ``limits``; yield the port."""
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                            **uvicorn_options(limits))
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield port
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def multipart(*files: tuple[str, bytes]) -> bytes:
    """A multipart/form-data body with each file in the field ``images``."""
    parts = [
        f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"images\"; "
        f"filename=\"{name}\"\r\nContent-Type: application/octet-stream\r\n\r\n".encode()
        + data + b"\r\n"
        for name, data in files
    ]
    return b"".join(parts) + f"--{BOUNDARY}--\r\n".encode()


def request_head(path: str = "/v1/predict", method: str = "POST", **headers: Any) -> bytes:
    """A request line and headers; ``content_length=...`` becomes ``content-length: ...``."""
    lines = [f"{method} {path} HTTP/1.1", "host: 127.0.0.1",
             f"content-type: multipart/form-data; boundary={BOUNDARY}"]
    lines += [f"{name.replace('_', '-')}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def connect(port: int, timeout: float = 10) -> socket.socket:
    client = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return client


def read_response(client: socket.socket) -> tuple[int, bytes]:
    """Status and raw response (head and body) read until the server closes or the body ends."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = client.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    if not head:
        return 0, b""
    length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                   if line.lower().startswith(b"content-length:")), None)
    while length is not None and len(body) < length and (chunk := client.recv(65536)):
        body += chunk
    return int(head.split(b" ")[1]), head + b"\r\n\r\n" + body


def post(port: int, body: bytes, path: str = "/v1/predict") -> tuple[int, bytes]:
    """Send a whole multipart request and read the answer."""
    with connect(port, timeout=30) as client:
        client.sendall(request_head(path, content_length=len(body)) + body)
        return read_response(client)
