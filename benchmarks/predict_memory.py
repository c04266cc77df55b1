"""Memory of ``melanoscan predict`` over a large folder: resident memory at 1k, 5k, 10k images.

``Predictor.predict_files`` decodes two batches at a time (the current one and the next), so the
memory it holds should not grow with the number of files; only the list of results does (a few
hundred bytes an image). This walks the given images in order, as ``predict`` does, and reads
the process's resident memory (``VmRSS``) and its peak (``VmHWM``) as the count passes each mark.

    python benchmarks/predict_memory.py --images ../shared/data/ham10000 \\
        --images ../shared/data/ham10000_more --count 10000
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from _report import command, machine, update_section, write_results

from melanoscan.bundle import resolve_bundle_path
from melanoscan.data.images import is_image_file
from melanoscan.inference.predictor import Predictor

MARKS = (1000, 5000, 10000)


def memory_mib() -> tuple[float, float]:
    """Resident memory now and its peak, in MiB (Linux ``/proc/self/status``)."""
    fields = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0]) / 1024
    return fields["VmRSS"], fields["VmHWM"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None, help="bundle (default: shipped)")
    parser.add_argument("--images", type=Path, action="append", required=True,
                        help="image folder (repeatable)")
    parser.add_argument("--count", type=int, default=10000)
    args = parser.parse_args()

    files = sorted(p for folder in args.images for p in folder.rglob("*")
                   if is_image_file(p))[: args.count]
    if not files:
        raise SystemExit(f"no image under {', '.join(map(str, args.images))}")
    sources = ", ".join(str(folder) for folder in args.images)
    predictor = Predictor(resolve_bundle_path(args.model))
    before = memory_mib()
    readings: dict[int, dict[str, float]] = {}
    done = 0
    started = time.perf_counter()

    def advance(count: int) -> None:
        nonlocal done
        done += count
        for mark in MARKS:
            if mark not in readings and done >= mark:
                rss, peak = memory_mib()
                readings[mark] = {"rss_mib": round(rss, 1), "peak_mib": round(peak, 1),
                                  "seconds": round(time.perf_counter() - started, 1)}
                print(mark, readings[mark])

    predictions, skipped = predictor.predict_files(files, progress=advance)
    payload = {
        "command": command(), "machine": machine(), "images": len(files),
        "source": sources, "backend": predictor.backend,
        "predicted": len(predictions), "skipped": len(skipped),
        "before_mib": {"rss_mib": round(before[0], 1), "peak_mib": round(before[1], 1)},
        "marks": {str(k): v for k, v in readings.items()},
    }
    path = write_results("predict_memory", payload)
    rows = "\n".join(f"| {mark} | {r['rss_mib']} | {r['peak_mib']} | {r['seconds']} |"
                     for mark, r in readings.items())
    body = (
        f"`{payload['command']}` on {payload['machine']['cpu_cores']} CPU cores "
        f"({predictor.backend}); {len(files)} JPEGs from {sources}, {len(skipped)} skipped. "
        f"Resident memory after loading the model: {payload['before_mib']['rss_mib']} MiB.\n\n"
        "| images predicted | resident MiB | peak MiB | seconds |\n|---|---|---|---|\n" + rows
    )
    update_section("predict_memory", "Memory of predict over a large folder", body)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
