"""``melanoscan serve`` in a child process on a free loopback port: for tests, benchmarks and
notebooks that need the real server rather than an in-process app."""

from __future__ import annotations

import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO

__all__ = ["ServerStartError", "free_port", "serve_in_background", "server_process"]


class ServerStartError(RuntimeError):
    """The server exited or did not answer ``/healthz`` in time; the message holds its output."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def serve_in_background(
    model: str | Path, extra_args: Sequence[str] = (), start_timeout_s: float = 120.0
) -> Iterator[str]:
    """Start ``melanoscan serve --model MODEL`` on 127.0.0.1, yield its URL once it is healthy.

    The server's output goes to a temporary file (a pipe nobody reads would fill up and block
    it under load) and is shown in :class:`ServerStartError` if it fails to start. The server is
    stopped when the block ends.

    Args:
        model: bundle directory or ``bundle.json``.
        extra_args: further ``serve`` options, e.g. ``["--max-concurrent", "2"]``.
        start_timeout_s: how long to wait for ``/healthz``.
    """
    with server_process(model, extra_args, start_timeout_s) as (url, _process):
        yield url


@contextmanager
def server_process(
    model: str | Path, extra_args: Sequence[str] = (), start_timeout_s: float = 120.0
) -> Iterator[tuple[str, subprocess.Popen]]:
    """:func:`serve_in_background`, yielding the server process too (e.g. to read its memory)."""
    port = free_port()
    command = [sys.executable, "-m", "melanoscan", "serve", "--model", str(model),
               "--host", "127.0.0.1", "--port", str(port), *extra_args]
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryFile("w+") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, text=True)
        try:
            _wait_until_healthy(url, process, log, start_timeout_s)
            yield url, process
        finally:
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _wait_until_healthy(
    url: str, process: subprocess.Popen, log: IO[str], timeout_s: float
) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(f"{url}/healthz", timeout=1) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        stopped = process.poll() is not None
        if stopped or time.monotonic() > deadline:
            log.seek(0)
            why = f"exited with code {process.returncode}" if stopped else (
                f"did not answer /healthz within {timeout_s:.0f} s")
            raise ServerStartError(f"melanoscan serve {why}:\n{log.read()}")
        time.sleep(0.25)
