"""Load test of ``melanoscan serve`` on loopback: requests/s, p50/p95/p99 latency and errors.

Starts the server on 127.0.0.1 (a free port), sends a fixed number of ``POST /v1/predict``
requests from 1, 4 and 16 concurrent clients, then stops the server. Nothing leaves the
machine, and every request has a timeout, so the script always ends by itself. Client and
server share this machine's cores.

With ``--abuse``, normal clients (16 by default) run once undisturbed and once alongside abusive
ones: extreme-aspect images (1 x 12,000 PNG), chunked uploads larger than any limit, requests of
many parts, and slow clients that send their headers a byte at a time. It reports the normal
clients' errors, their p95 against the undisturbed run, what each abuser got, and the server's
resident memory (before, peak, after).

    python benchmarks/serve_load.py --requests 200
    python benchmarks/serve_load.py --abuse --requests 200
    python benchmarks/serve_load.py --abuse --requests 4 --clients 2 --oversize-mb 2 --parts 40 \\
        --part-kb 8 --slow-clients 2 --no-write          # proves it runs, in seconds
"""

from __future__ import annotations

import argparse
import io
import itertools
import os
import socket
import statistics
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx2
import numpy as np
from _report import ROOT, command, machine, update_section, write_results
from PIL import Image

from melanoscan.bundle import resolve_bundle_path
from melanoscan.data.images import is_image_file
from melanoscan.serving.background import server_process

REQUEST_TIMEOUT_S = 120.0
BOUNDARY = "serve-load-abuse"


def run_level(url: str, payloads: list[bytes], names: list[str], requests: int,
              clients: int, per_request: int, gradcam: bool) -> dict[str, float]:
    """``requests`` requests from ``clients`` threads; latencies of the answered ones."""
    counter = itertools.count()
    lock = threading.Lock()
    latencies: list[float] = []
    errors: dict[str, int] = {}

    def client() -> None:
        with httpx2.Client(timeout=REQUEST_TIMEOUT_S) as session:
            while (number := next(counter)) < requests:
                picks = [(number * per_request + k) % len(payloads) for k in range(per_request)]
                files = [("images", (names[i], payloads[i], "image/jpeg")) for i in picks]
                started = time.perf_counter()
                try:
                    response = session.post(f"{url}/v1/predict", files=files,
                                            params={"gradcam": str(gradcam).lower()})
                    outcome = "ok" if response.status_code == 200 else str(response.status_code)
                except httpx2.HTTPError as exc:
                    outcome = type(exc).__name__
                elapsed = time.perf_counter() - started
                with lock:
                    if outcome == "ok":
                        latencies.append(elapsed)
                    else:
                        errors[outcome] = errors.get(outcome, 0) + 1

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        for future in [pool.submit(client) for _ in range(clients)]:
            future.result()
    wall = time.perf_counter() - started
    return {
        "clients": clients,
        "requests": requests,
        "images_per_request": per_request,
        "ok": len(latencies),
        "errors": sum(errors.values()),
        "error_kinds": errors,
        "wall_s": wall,
        "requests_per_s": requests / wall,
        "images_per_s": len(latencies) * per_request / wall,
        "p50_ms": statistics.median(latencies) * 1000 if latencies else float("nan"),
        "p95_ms": float(np.percentile(latencies, 95)) * 1000 if latencies else float("nan"),
        "p99_ms": float(np.percentile(latencies, 99)) * 1000 if latencies else float("nan"),
    }


class Tally:
    """Outcomes of one kind of abusive client, and the numbers each outcome came with."""

    def __init__(self) -> None:
        self.outcomes: Counter[str] = Counter()
        self.numbers: dict[str, list[float]] = {}
        self._lock = threading.Lock()

    def add(self, outcome: str, **numbers: float) -> None:
        with self._lock:
            self.outcomes[outcome] += 1
            for name, value in numbers.items():
                self.numbers.setdefault(name, []).append(value)

    def summary(self) -> dict[str, Any]:
        return {"outcomes": dict(self.outcomes),
                **{f"{name}_max": max(values) for name, values in self.numbers.items()},
                **{f"{name}_median": statistics.median(values)
                   for name, values in self.numbers.items()}}


def _outcome(send: Callable[[], httpx2.Response]) -> str:
    try:
        response = send()
    except httpx2.HTTPError as exc:
        return type(exc).__name__
    try:
        return f"{response.status_code} {response.json()['error']['code']}"
    except (ValueError, KeyError, TypeError):
        return str(response.status_code)


def _post_until_stopped(url: str, files: list, stop: threading.Event, tally: Tally) -> None:
    """POST the same multipart ``files`` again and again, tallying each outcome and its time."""
    with httpx2.Client(timeout=REQUEST_TIMEOUT_S) as session:
        while not stop.is_set():
            started = time.perf_counter()
            outcome = _outcome(lambda: session.post(f"{url}/v1/predict", files=files))
            tally.add(outcome, seconds=time.perf_counter() - started)


def extreme_aspect(url: str, stop: threading.Event, tally: Tally, _args: Any) -> None:
    """A 1 x 12,000 PNG (about a hundred bytes), again and again."""
    buffer = io.BytesIO()
    Image.new("L", (1, 12_000)).save(buffer, format="PNG")
    files = [("images", ("strip.png", buffer.getvalue(), "image/png"))]
    _post_until_stopped(url, files, stop, tally)


def chunked_oversize(url: str, stop: threading.Event, tally: Tally, args: Any) -> None:
    """One part that never ends, sent chunked (no Content-Length), up to ``--oversize-mb``."""
    head = (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"images\"; "
            'filename="big.png"\r\nContent-Type: image/png\r\n\r\n').encode()
    chunk = b"\x00" * 65536
    headers = {"content-type": f"multipart/form-data; boundary={BOUNDARY}"}
    while not stop.is_set():
        sent = 0

        def body() -> Iterator[bytes]:
            nonlocal sent
            yield head
            while sent < args.oversize_mb * 2**20 and not stop.is_set():
                sent += len(chunk)
                yield chunk

        with httpx2.Client(timeout=REQUEST_TIMEOUT_S) as session:
            outcome = _outcome(lambda: session.post(f"{url}/v1/predict", content=body(),
                                                    headers=headers))
        tally.add(outcome, mb_sent=sent / 2**20)


def many_parts(url: str, stop: threading.Event, tally: Tally, args: Any) -> None:
    """``--parts`` parts of ``--part-kb`` KiB each in one request."""
    part = np.random.default_rng(0).bytes(args.part_kb * 1024)
    files = [("images", (f"{i}.png", part, "image/png")) for i in range(args.parts)]
    _post_until_stopped(url, files, stop, tally)


def slow_headers(url: str, stop: threading.Event, tally: Tally, args: Any) -> None:
    """Send a request's headers a byte every ``--slow-interval`` s; how long until closed."""
    address = urlsplit(url)
    head = b"POST /v1/predict HTTP/1.1\r\nhost: x\r\nx-slow: " + b"a" * 10_000
    while not stop.is_set():
        started = time.perf_counter()
        outcome = "held to the end"
        with socket.create_connection((address.hostname, address.port), timeout=5) as client:
            client.settimeout(args.slow_interval)
            for byte in head:
                if stop.is_set():
                    break
                try:
                    client.sendall(bytes([byte]))
                    if client.recv(1024) == b"":
                        outcome = "closed by the server"
                        break
                except TimeoutError:
                    continue  # nothing to read yet: the connection is still open
                except OSError:
                    outcome = "closed by the server"
                    break
        tally.add(outcome, seconds_held=time.perf_counter() - started)


ABUSERS: dict[str, Callable[[str, threading.Event, Tally, Any], None]] = {
    "extreme_aspect": extreme_aspect,
    "chunked_oversize": chunked_oversize,
    "many_parts": many_parts,
    "slow_headers": slow_headers,
}


def rss_mb(pid: int, field: str = "VmRSS") -> float:
    """A memory figure of a process from /proc (Linux), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def abuse_run(url: str, pid: int, payloads: list[bytes], names: list[str],
              args: Any) -> dict[str, Any]:
    """Normal clients undisturbed, then alongside every abuser; memory of the server."""
    clients = max(args.clients)
    normal = (url, payloads, names, args.requests, clients, args.images_per_request,
              args.gradcam)
    undisturbed = run_level(*normal)
    before = rss_mb(pid)
    stop, tallies, threads = threading.Event(), {kind: Tally() for kind in ABUSERS}, []
    for kind, abuser in ABUSERS.items():
        count = args.slow_clients if kind == "slow_headers" else args.abusers
        for _ in range(count):
            threads.append(threading.Thread(target=abuser, args=(url, stop, tallies[kind], args),
                                            daemon=True))
    peak = before
    sampling = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not sampling.wait(0.1):
            peak = max(peak, rss_mb(pid))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    for thread in threads:
        thread.start()
    time.sleep(args.abuse_warmup_s)
    under_abuse = run_level(*normal)
    stop.set()
    for thread in threads:
        thread.join(timeout=REQUEST_TIMEOUT_S)
    time.sleep(2)  # let the server finish what the abusers left
    sampling.set()
    sampler.join()
    return {
        "clients": clients,
        "undisturbed": undisturbed,
        "under_abuse": under_abuse,
        "abusers": {kind: {"threads": args.slow_clients if kind == "slow_headers"
                           else args.abusers, **tallies[kind].summary()}
                    for kind in ABUSERS},
        "server_rss_mb": {"before": before, "peak": peak, "after": rss_mb(pid),
                          "high_water_mark": rss_mb(pid, "VmHWM")},
    }


def _cores(payload: dict[str, Any]) -> str:
    cores = payload.get("cores")
    if cores:
        return (f"server pinned to CPU core {cores['server']}, load generator to "
                f"{cores['load_generator']}")
    return f"{payload['machine']['cpu_cores']} CPU cores shared with the load generator"


def pin(server_pid: int) -> dict[str, list[int]]:
    """Every thread of the server on the last core, this process (and the client threads it
    starts later) on the others, so that the load generator's own work, the abusers' included,
    does not take the server's CPU: the loopback stands in for a network between two machines.
    """
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        raise SystemExit("--pin needs at least 2 CPU cores")
    server, clients = {cores[-1]}, set(cores[:-1])
    for task in Path(f"/proc/{server_pid}/task").iterdir():  # threads made later inherit it
        os.sched_setaffinity(int(task.name), server)
    os.sched_setaffinity(0, clients)
    return {"server": sorted(server), "load_generator": sorted(clients)}


def print_abuse(result: dict[str, Any]) -> None:
    calm, loud = result["undisturbed"], result["under_abuse"]
    print(f"normal clients ({result['clients']}): p95 {calm['p95_ms']:.0f} ms undisturbed, "
          f"{loud['p95_ms']:.0f} ms under abuse; errors {calm['error_kinds'] or 0} -> "
          f"{loud['error_kinds'] or 0}")
    for kind, tally in result["abusers"].items():
        print(f"  {kind}: {tally}")
    print("server RSS MiB: " + ", ".join(f"{k} {v:.0f}"
                                         for k, v in result["server_rss_mb"].items()))


def abuse_section(payload: dict[str, Any], args: Any) -> str:
    result = payload["abuse"]
    calm, loud, rss = result["undisturbed"], result["under_abuse"], result["server_rss_mb"]
    rows = "\n".join(f"| {kind} | {tally['threads']} | "
                     f"{', '.join(f'{k}: {v}' for k, v in tally['outcomes'].items())} |"
                     for kind, tally in result["abusers"].items())
    return f"""
`{payload['command']}`: {result['clients']} normal clients send {args.requests} requests
undisturbed, then again alongside the abusive clients below ({payload['backend']}, 1 process,
{_cores(payload)}).

| normal clients | p50 ms | p95 ms | errors |
|---|---|---|---|
| undisturbed | {calm['p50_ms']:.0f} | {calm['p95_ms']:.0f} | {calm['error_kinds'] or 0} |
| under abuse | {loud['p50_ms']:.0f} | {loud['p95_ms']:.0f} | {loud['error_kinds'] or 0} |

| abusive client | threads | what they got |
|---|---|---|
{rows}

Server resident memory: {rss['before']:.0f} MiB before the abuse, peak {rss['peak']:.0f} MiB,
{rss['after']:.0f} MiB after.
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=None, help="bundle (default: shipped)")
    parser.add_argument("--images", type=Path, default=ROOT / "examples")
    parser.add_argument("--requests", type=int, default=200, help="requests per level")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--images-per-request", type=int, default=1)
    parser.add_argument("--gradcam", action="store_true", help="ask for Grad-CAM overlays")
    parser.add_argument("--max-concurrent", type=int, default=1, help="server setting")
    parser.add_argument("--max-waiting", type=int, default=None,
                        help="server setting (default: the server's own)")
    parser.add_argument("--no-write", action="store_true", help="print only (quick check)")
    abuse = parser.add_argument_group("abuse run")
    parser.add_argument("--pin", action="store_true",
                        help="server on the last CPU core, load generator on the others (as "
                             "if on separate machines; needs at least 2 cores)")
    abuse.add_argument("--abuse", action="store_true",
                       help="normal clients (the largest --clients) alongside abusive ones")
    abuse.add_argument("--abusers", type=int, default=2, help="threads per abusive kind")
    abuse.add_argument("--oversize-mb", type=float, default=1536, help="chunked upload size")
    abuse.add_argument("--parts", type=int, default=300, help="parts per many-part request")
    abuse.add_argument("--part-kb", type=int, default=1024, help="size of each part")
    abuse.add_argument("--slow-clients", type=int, default=100, help="slow-header clients")
    abuse.add_argument("--slow-interval", type=float, default=1.0, help="seconds per byte")
    abuse.add_argument("--abuse-warmup-s", type=float, default=2.0,
                       help="abusers start this long before the normal clients")
    args = parser.parse_args()

    model = resolve_bundle_path(args.model)
    files = sorted(p for p in args.images.rglob("*") if is_image_file(p))
    if not files:
        raise SystemExit(f"no image under {args.images}")
    payloads, names = [p.read_bytes() for p in files], [p.name for p in files]
    server_args = ["--max-concurrent", str(args.max_concurrent)]
    if args.max_waiting is not None:
        server_args += ["--max-waiting", str(args.max_waiting)]
    with server_process(model, server_args) as (url, process):
        backend = httpx2.get(f"{url}/healthz").json()["backend"]
        cores = pin(process.pid) if args.pin else None
        if args.abuse:
            result = abuse_run(url, process.pid, payloads, names, args)
            print_abuse(result)
        levels = []
        for clients in [] if args.abuse else args.clients:
            level = run_level(url, payloads, names, args.requests, clients,
                              args.images_per_request, args.gradcam)
            levels.append(level)
            print(f"{clients:>3} clients: {level['requests_per_s']:.1f} req/s, "
                  f"p50 {level['p50_ms']:.0f} ms, p99 {level['p99_ms']:.0f} ms, "
                  f"{level['errors']} errors", flush=True)
    if args.no_write:
        return
    payload = {"command": command(), "machine": machine(), "model": str(model),
               "backend": backend, "gradcam": args.gradcam,
               "images": f"{len(files)} files from {args.images.name}/",
               "server": {"workers": 1, "max_concurrent": args.max_concurrent},
               "cores": cores}
    if args.abuse:
        payload["abuse"] = result
        write_results("serve_load_abuse", payload)
        update_section("serve_load_abuse", "Service under abuse (loopback)",
                       abuse_section(payload, args))
        return
    payload["levels"] = levels
    write_results("serve_load", payload)
    rows = "\n".join(
        f"| {lv['clients']} | {lv['requests']} | {lv['requests_per_s']:.1f} | "
        f"{lv['images_per_s']:.1f} | {lv['p50_ms']:.0f} | {lv['p99_ms']:.0f} | {lv['errors']} |"
        for lv in levels
    )
    update_section("serve_load", "Service under load (loopback)", f"""
`{payload['command']}`: `melanoscan serve` (1 process, {args.max_concurrent} inference at a time,
{backend}) on {_cores(payload)};
{args.images_per_request} image(s) per request from {payload['images']}, Grad-CAM
{'on' if args.gradcam else 'off'}.

| concurrent clients | requests | requests/s | images/s | p50 ms | p99 ms | errors |
|---|---|---|---|---|---|---|
{rows}
""")


if __name__ == "__main__":
    main()
