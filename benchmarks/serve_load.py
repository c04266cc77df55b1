"""Load test of ``melanoscan serve`` on loopback: requests/s, p50/p99 latency and errors.

Starts the server on 127.0.0.1 (a free port), sends a fixed number of ``POST /v1/predict``
requests from 1, 4 and 16 concurrent clients, then stops the server. Nothing leaves the
machine, and every request has a timeout, so the script always ends by itself. Client and
server share this machine's cores.

    python benchmarks/serve_load.py --requests 200
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx2
import numpy as np
from _report import ROOT, command, machine, update_section, write_results

from melanoscan.bundle import resolve_bundle_path
from melanoscan.data.images import is_image_file
from melanoscan.serving.background import serve_in_background

REQUEST_TIMEOUT_S = 120.0


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
        "p99_ms": float(np.percentile(latencies, 99)) * 1000 if latencies else float("nan"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=None, help="bundle (default: shipped)")
    parser.add_argument("--images", type=Path, default=ROOT / "examples")
    parser.add_argument("--requests", type=int, default=200, help="requests per level")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--images-per-request", type=int, default=1)
    parser.add_argument("--gradcam", action="store_true", help="ask for Grad-CAM overlays")
    parser.add_argument("--max-concurrent", type=int, default=1, help="server setting")
    parser.add_argument("--no-write", action="store_true", help="print only (quick check)")
    args = parser.parse_args()

    model = resolve_bundle_path(args.model)
    files = sorted(p for p in args.images.rglob("*") if is_image_file(p))
    if not files:
        raise SystemExit(f"no image under {args.images}")
    payloads, names = [p.read_bytes() for p in files], [p.name for p in files]
    server_args = ["--max-concurrent", str(args.max_concurrent),
                   "--max-waiting", str(max(args.clients))]
    with serve_in_background(model, server_args) as url:
        backend = httpx2.get(f"{url}/healthz").json()["backend"]
        levels = []
        for clients in args.clients:
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
               "levels": levels}
    write_results("serve_load", payload)
    rows = "\n".join(
        f"| {lv['clients']} | {lv['requests']} | {lv['requests_per_s']:.1f} | "
        f"{lv['images_per_s']:.1f} | {lv['p50_ms']:.0f} | {lv['p99_ms']:.0f} | {lv['errors']} |"
        for lv in levels
    )
    update_section("serve_load", "Service under load (loopback)", f"""
`{payload['command']}`: `melanoscan serve` (1 process, {args.max_concurrent} inference at a time,
{backend}) on {payload['machine']['cpu_cores']} CPU cores shared with the load generator;
{args.images_per_request} image(s) per request from {payload['images']}, Grad-CAM
{'on' if args.gradcam else 'off'}.

| concurrent clients | requests | requests/s | images/s | p50 ms | p99 ms | errors |
|---|---|---|---|---|---|---|
{rows}
""")


if __name__ == "__main__":
    main()
