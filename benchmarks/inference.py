"""Inference speed on this machine: latency and batched throughput, torch eager vs onnxruntime.

End to end means from JPEG bytes on disk to calibrated probabilities: decode, preprocess
(resize, crop, normalise) and the network. Decode + preprocess is also timed alone, so it is
visible whether it dominates.

    python benchmarks/inference.py --images ../shared/data/isic2018_task3_test --count 256 \\
        --label shipped
    python benchmarks/inference.py --images ../shared/data/isic2018_task3_test --count 64 \\
        --upscale 3000x2000 --label "shipped, 3000x2000 JPEGs"

``--upscale`` re-encodes the images at a camera's size (bicubic, JPEG quality 92) in a temporary
folder: what a clinic's dermatoscope writes, where decoding, not the network, sets the pace.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from _report import RESULTS, command, machine, update_section, write_results
from PIL import Image

from melanoscan.bundle import int8_state, read_metadata, resolve_bundle_path
from melanoscan.data.images import decode, is_image_file
from melanoscan.inference.backends import INT8_BACKEND
from melanoscan.inference.predictor import Predictor

BATCH_SIZES = (1, 8, 32)
RESULT = RESULTS / "inference.json"


def images_in(folder: Path, count: int) -> list[Path]:
    files = sorted(p for p in folder.rglob("*") if is_image_file(p))[:count]
    if not files:
        raise SystemExit(f"no image under {folder}")
    return files


def upscaled(files: list[Path], size: str, folder: Path) -> list[Path]:
    """``files`` re-encoded as ``WIDTHxHEIGHT`` JPEGs in ``folder``."""
    width, height = (int(v) for v in size.lower().split("x"))
    written = []
    for i, path in enumerate(files):
        target = folder / f"{i:05d}.jpg"
        decode(path).image.resize((width, height), Image.Resampling.BICUBIC).save(
            target, quality=92)
        written.append(target)
    return written


def preprocess_seconds(predictor: Predictor, files: list[Path], full: bool = False) -> float:
    """Decode + preprocess per image as ``predict`` does it, or with every pixel decoded."""
    recipe = predictor.preprocessing
    min_side = None if full else recipe.decode_min_side
    started = time.perf_counter()
    for path in files:
        recipe(decode(path, min_side=min_side).image)
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
    parser.add_argument("--upscale", metavar="WxH", help="re-encode the images at this size")
    parser.add_argument("--label", required=True,
                        help="row name; rows measured earlier under other labels are kept")
    args = parser.parse_args()

    files = images_in(args.images, args.count)
    scratch = tempfile.TemporaryDirectory()
    if args.upscale:
        files = upscaled(files, args.upscale, Path(scratch.name))
    bundle = resolve_bundle_path(args.model)
    results = {}
    backends = ["torch", "onnx"]
    if int8_state(bundle, read_metadata(bundle)) == "current":
        backends.append(INT8_BACKEND)
    for backend in backends:
        predictor = Predictor(bundle, backend=backend)
        median, p95 = latency(predictor, files, args.repeats)
        results[backend] = {
            "latency_ms_median": round(median, 1),
            "latency_ms_p95": round(p95, 1),
            "images_per_s": {str(b): round(end_to_end(predictor, files, b), 1)
                             for b in BATCH_SIZES},
            "decode_preprocess_ms_per_image": round(preprocess_seconds(predictor, files) * 1000,
                                                    2),
            "full_decode_preprocess_ms_per_image": round(
                preprocess_seconds(predictor, files, full=True) * 1000, 2),
        }
        print(backend, results[backend])

    runs = json.loads(RESULT.read_text())["runs"] if RESULT.exists() else {}
    runs[args.label] = {
        "command": command(), "machine": machine(), "bundle": str(bundle),
        "image_size": Predictor(bundle).preprocessing.image_size,
        "images": len(files), "source": str(args.images), "upscale": args.upscale,
        "results": results,
    }
    scratch.cleanup()
    path = write_results("inference", {"runs": runs})
    rows = "\n".join(
        f"| {label} ({run['image_size']} px) | {backend} | {r['latency_ms_median']} "
        f"| {r['latency_ms_p95']} | "
        + " | ".join(str(r["images_per_s"][str(b)]) for b in BATCH_SIZES)
        + f" | {r['decode_preprocess_ms_per_image']} "
        f"| {r.get('full_decode_preprocess_ms_per_image', '')} |"
        for label, run in runs.items()
        for backend, r in run["results"].items()
    )
    commands = "\n".join(
        f"- {label}: `{run['command']}` on {run['machine']['cpu_cores']} CPU cores, torch "
        f"{run['machine']['torch']}, GPU: {run['machine']['gpu'] or 'none'}; {run['images']} "
        f"JPEGs from {run['source']}"
        + (f" re-encoded at {run['upscale']}" if run.get("upscale") else "")
        + f"; model `{run['bundle']}`"
        for label, run in runs.items()
    )
    body = (
        "End to end (decode, preprocess, network, calibrated probabilities); decode + "
        "preprocess alone in the last columns, as predict does it (large JPEGs decoded at "
        "reduced scale, shorter side >= 3x the input) and with every pixel decoded. Goal for "
        "the shipped model: 100 images/s batched."
        "\n\n" + commands + "\n\n"
        "| model | backend | latency median ms | latency p95 ms | img/s batch 1 | img/s batch 8 "
        "| img/s batch 32 | decode + preprocess ms/image | same, full decode |\n"
        "|---|---|---|---|---|---|---|---|---|\n"
        + rows
    )
    update_section("inference", "Inference speed", body)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
