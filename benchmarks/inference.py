"""Inference speed on this machine: latency and batched throughput, torch eager vs onnxruntime.

End to end means from JPEG bytes on disk to calibrated probabilities: decode, preprocess
(resize, crop, normalise) and the network. Decode + preprocess is also timed alone, so it is
visible whether it dominates.

    python benchmarks/inference.py --images ../shared/data/isic2018_task3_test --count 256 \\
        --label shipped
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
from _report import RESULTS, command, machine, update_section, write_results

from melanoscan.bundle import resolve_bundle_path
from melanoscan.data.images import decode, is_image_file
from melanoscan.inference.predictor import Predictor

BATCH_SIZES = (1, 8, 32)
RESULT = RESULTS / "inference.json"


def images_in(folder: Path, count: int) -> list[Path]:
    files = sorted(p for p in folder.rglob("*") if is_image_file(p))[:count]
    if not files:
        raise SystemExit(f"no image under {folder}")
    return files


def preprocess_seconds(predictor: Predictor, files: list[Path]) -> float:
    started = time.perf_counter()
    for path in files:
        predictor.preprocessing(decode(path).image)
    return (time.perf_counter() - started) / len(files)


def end_to_end(predictor: Predictor, files: list[Path], batch: int) -> float:
    """Images per second through ``predict_files`` (decode + preprocess + network)."""
    predictor.predict_files(files[:batch], batch_size=batch)  # warm-up
    started = time.perf_counter()
    predictor.predict_files(files, batch_size=batch)
    return len(files) / (time.perf_counter() - started)


def latency(predictor: Predictor, files: list[Path], repeats: int) -> tuple[float, float]:
    """Median and 95th percentile milliseconds for one image, end to end."""
    predictor.predict_files(files[:1], batch_size=1)
    times = []
    for path in (files * repeats)[: max(repeats, 20)]:
        started = time.perf_counter()
        predictor.predict_files([path], batch_size=1)
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times), float(np.percentile(times, 95))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None, help="bundle (default: shipped)")
    parser.add_argument("--images", type=Path, required=True)
    parser.add_argument("--count", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=50, help="single-image latency runs")
    parser.add_argument("--label", required=True,
                        help="row name; rows measured earlier under other labels are kept")
    args = parser.parse_args()

    files = images_in(args.images, args.count)
    bundle = resolve_bundle_path(args.model)
    results = {}
    for backend in ("torch", "onnx"):
        predictor = Predictor(bundle, backend=backend)
        median, p95 = latency(predictor, files, args.repeats)
        results[backend] = {
            "latency_ms_median": round(median, 1),
            "latency_ms_p95": round(p95, 1),
            "images_per_s": {str(b): round(end_to_end(predictor, files, b), 1)
                             for b in BATCH_SIZES},
            "decode_preprocess_ms_per_image": round(preprocess_seconds(predictor, files) * 1000,
                                                    2),
        }
        print(backend, results[backend])

    runs = json.loads(RESULT.read_text())["runs"] if RESULT.exists() else {}
    runs[args.label] = {
        "command": command(), "machine": machine(), "bundle": str(bundle),
        "image_size": Predictor(bundle).preprocessing.image_size,
        "images": len(files), "source": str(args.images), "results": results,
    }
    path = write_results("inference", {"runs": runs})
    rows = "\n".join(
        f"| {label} ({run['image_size']} px) | {backend} | {r['latency_ms_median']} "
        f"| {r['latency_ms_p95']} | "
        + " | ".join(str(r["images_per_s"][str(b)]) for b in BATCH_SIZES)
        + f" | {r['decode_preprocess_ms_per_image']} |"
        for label, run in runs.items()
        for backend, r in run["results"].items()
    )
    commands = "\n".join(
        f"- {label}: `{run['command']}` on {run['machine']['cpu_cores']} CPU cores, torch "
        f"{run['machine']['torch']}, GPU: {run['machine']['gpu'] or 'none'}; {run['images']} "
        f"JPEGs from {run['source']}; model `{run['bundle']}`"
        for label, run in runs.items()
    )
    body = (
        "End to end (decode, preprocess, network, calibrated probabilities); decode + "
        "preprocess alone in the last column. Goal for the shipped model: 100 images/s batched."
        "\n\n" + commands + "\n\n"
        "| model | backend | latency median ms | latency p95 ms | img/s batch 1 | img/s batch 8 "
        "| img/s batch 32 | decode + preprocess ms/image |\n|---|---|---|---|---|---|---|---|\n"
        + rows
    )
    update_section("inference", "Inference speed", body)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
