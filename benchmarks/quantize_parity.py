"""Static int8 quantisation of a bundle's ONNX model: parity gate and speed against fp32.

Calibrates on training images of the bundle, compares fp32 and int8 on a labelled test set
(ISIC 2018 Task 3 test by default: top-1 agreement, melanoma AUC, alert decisions) and times
both on preprocessed inputs (network only: batched images/s and single-image latency), with
the thread count of the speed targets (2).

    python benchmarks/quantize_parity.py --calibration 300
    python benchmarks/quantize_parity.py --limit 200 --no-doc      # development
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from _report import RESULTS, ROOT, command, machine, update_section, write_results

from melanoscan import taxonomy
from melanoscan.bundle import ONNX_FILE, read_metadata, resolve_bundle_path
from melanoscan.inference.bundle_images import calibration_inputs, labelled_inputs
from melanoscan.inference.onnx_graph import fold_static_padding
from melanoscan.inference.parity import onnx_session, parity_report, passes, run_onnx
from melanoscan.inference.quantize import INT8_ONNX_FILE, QuantizationSettings, quantize_int8
from melanoscan.preprocess import Preprocessing

RESULT = RESULTS / "quantize_parity.json"
DEFAULT_TEST = ROOT.parent / "shared" / "data" / "isic2018_task3_test"


def fp32_model(bundle: Path, workdir: Path) -> Path:
    """The bundle's ONNX export, exported into ``workdir`` when the bundle has none."""
    exported = bundle / read_metadata(bundle).exports.get("onnx", {}).get("file", ONNX_FILE)
    if exported.is_file():
        return exported
    from melanoscan.inference.export import export_onnx

    target = export_onnx(bundle, workdir / "bundle")
    return target / read_metadata(target).exports["onnx"]["file"]


def speed(
    models: dict[str, Path], inputs: np.ndarray, threads: int, batch: int, rounds: int,
    repeats: int,
) -> dict[str, dict[str, Any]]:
    """Network-only throughput (batched) and single-image latency on preprocessed inputs.

    The models take turns, round after round, so that a load change on the machine hits them
    alike; throughput is the median over rounds (the best round is kept too).

    Args:
        models: label -> ONNX model.
        inputs: preprocessed inputs; whole batches of them are timed.
        threads: onnxruntime intra-op threads.
        batch: batch size of the throughput runs.
        rounds: throughput passes over ``inputs`` per model.
        repeats: single-image runs per model (spread over the rounds).
    """
    sessions = {label: onnx_session(path, threads=threads) for label, path in models.items()}
    batches = [inputs[i:i + batch] for i in range(0, len(inputs) - batch + 1, batch)] or [inputs]
    rates: dict[str, list[float]] = {label: [] for label in models}
    times: dict[str, list[float]] = {label: [] for label in models}
    for session in sessions.values():  # warm-up
        name = session.get_inputs()[0].name
        session.run(None, {name: batches[0]})
        session.run(None, {name: inputs[:1]})
    per_round = max(1, repeats // rounds)
    for round_index in range(rounds):
        for label, session in sessions.items():
            name = session.get_inputs()[0].name
            started = time.perf_counter()
            for chunk in batches:
                session.run(None, {name: chunk})
            rates[label].append(sum(len(c) for c in batches) / (time.perf_counter() - started))
            for index in range(per_round):
                one = inputs[(round_index * per_round + index) % len(inputs)][None]
                started = time.perf_counter()
                session.run(None, {name: one})
                times[label].append((time.perf_counter() - started) * 1000)
    return {label: {
        "images_per_s": round(statistics.median(rates[label]), 1),
        "images_per_s_best": round(max(rates[label]), 1),
        "latency_ms_median": round(statistics.median(times[label]), 2),
        "latency_ms_p95": round(float(np.percentile(times[label], 95)), 2),
    } for label in models}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None, help="bundle (default: shipped)")
    parser.add_argument("--data", type=Path, default=DEFAULT_TEST,
                        help="labelled test set (default: ISIC 2018 Task 3 test)")
    parser.add_argument("--calibration", type=int, default=300,
                        help="training images to calibrate on")
    parser.add_argument("--sources", type=Path, nargs="*", default=None,
                        help="where the training images are (default: the bundle's sources)")
    parser.add_argument("--limit", type=int, default=None, help="first N test images only")
    defaults = QuantizationSettings()
    parser.add_argument("--activation", choices=("uint8", "int8"),
                        default=defaults.activation_type)
    parser.add_argument("--method", choices=("minmax", "entropy", "percentile"),
                        default=defaults.calibration, help="calibration method")
    parser.add_argument("--float-input-conv", action="store_true",
                        help="keep the convolution reading the image in float")
    parser.add_argument("--keep-float", nargs="*", default=None, metavar="PATTERN",
                        help="node-name patterns kept float (default: the settings' default; "
                             "give none to quantise everything)")
    parser.add_argument("--plain", action="store_true",
                        help="onnxruntime's rounding only: no sum-preserving rounding, no bias "
                             "correction")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=7, help="throughput rounds per model")
    parser.add_argument("--repeats", type=int, default=210, help="single-image latency runs")
    parser.add_argument("--keep", type=Path, default=None, help="also save the int8 model here")
    parser.add_argument("--no-doc", action="store_true", help="do not touch docs/BENCHMARKS.md")
    args = parser.parse_args()

    bundle = resolve_bundle_path(args.model)
    metadata = read_metadata(bundle)
    settings = QuantizationSettings(
        activation_type=args.activation, calibration=args.method,
        float_input_conv=args.float_input_conv, preserve_kernel_sums=not args.plain,
        bias_correction=not args.plain,
        **({} if args.keep_float is None else {"keep_float": tuple(args.keep_float)}),
    )
    with tempfile.TemporaryDirectory(prefix="quantize-parity-") as tmp:
        workdir = Path(tmp)
        fp32 = fp32_model(bundle, workdir)
        started = time.perf_counter()
        calibration = calibration_inputs(bundle, args.calibration, sources=args.sources)
        int8 = quantize_int8(fp32, workdir / INT8_ONNX_FILE, calibration, settings)
        quantise_s = time.perf_counter() - started
        folded = fold_static_padding(fp32, workdir / "model.folded.onnx")
        inputs, melanoma = labelled_inputs(bundle, args.data, args.limit)
        temperature = float(metadata.calibration.get("temperature") or 1.0)
        threshold = float(metadata.calibration.get("alert_threshold") or 0.5)
        report = parity_report(fp32, int8, inputs, melanoma, temperature, threshold,
                               metadata.classes.index(taxonomy.MELANOMA))
        verdict = passes(report)
        sample = inputs[:64]
        fold_difference = max(
            float(np.abs(a - b).max()) for a, b in zip(
                run_onnx(onnx_session(fp32), sample).values(),
                run_onnx(onnx_session(folded), sample).values(), strict=True))
        models = {"onnx fp32": fp32, "onnx fp32, padding folded": folded, "onnx int8": int8}
        timing = speed(models, inputs[:256], args.threads, args.batch, args.rounds, args.repeats)
        for label, path in models.items():
            timing[label] = {"size_mb": round(path.stat().st_size / 1e6, 2), **timing[label]}
            print(label, timing[label], flush=True)
        if args.keep:
            args.keep.write_bytes(int8.read_bytes())

    result = {
        "command": command(), "machine": machine(), "bundle": str(bundle),
        "image_size": Preprocessing.from_dict(metadata.preprocessing).image_size,
        "test_set": str(args.data), "test_images": len(inputs),
        "limit": args.limit, "calibration_images": len(calibration),
        "settings": settings.to_dict(), "quantise_seconds": round(quantise_s, 1),
        "threads": args.threads, "batch": args.batch,
        "parity": report, "gate": {"passed": verdict.passed, "reasons": verdict.reasons},
        "fp32_folded_max_abs_difference": fold_difference,
        "speed": timing,
    }
    path = write_results("quantize_parity", result)
    body = table(result)
    print(body)
    if not args.no_doc:
        update_section("quantize_parity", "Int8 quantisation: parity gate and speed", body)
    print(f"wrote {path}")


def table(result: dict[str, Any]) -> str:
    """The docs/BENCHMARKS.md section: gate figures, then size and speed per model."""
    parity, settings = result["parity"], result["settings"]
    auc = "n/a" if parity["auc_difference"] is None else (
        f"{parity['melanoma_auc_fp32']:.4f} → {parity['melanoma_auc_int8']:.4f} "
        f"({parity['auc_difference']:+.4f})")
    verdict = "**passes**" if result["gate"]["passed"] else (
        "**fails**: " + "; ".join(result["gate"]["reasons"]))
    speed_rows = "\n".join(
        f"| {label} | {row['size_mb']} | {row['images_per_s']} ({row['images_per_s_best']}) "
        f"| {row['latency_ms_median']} "
        f"| {row['latency_ms_p95']} |" for label, row in result["speed"].items())
    return (
        f"`{result['command']}` on {result['machine']['cpu_cores']} CPU cores "
        f"({result['machine']['date']}); model `{result['bundle']}` "
        f"({result['image_size']} px); {result['test_images']} images of "
        f"`{result['test_set']}` ({parity['melanoma_images']} melanoma). Static QDQ "
        f"quantisation, per-channel int8 weights, {settings['activation_type']} activations, "
        f"{settings['calibration']} calibration on {result['calibration_images']} training "
        f"images; kept float: "
        f"{', '.join(f'`{p}`' for p in settings.get('keep_float') or []) or 'nothing'} "
        "(and the nodes writing the outputs).\n\n"
        "| gate criterion | target | measured |\n|---|---|---|\n"
        f"| top-1 agreement with fp32 | >= 99% | {parity['top1_agreement']:.2%} |\n"
        f"| melanoma AUC, fp32 → int8 | within 0.005 | {auc} |\n"
        f"| identical alert decision (threshold {parity['alert_threshold']:.4f}) | >= 99% "
        f"| {parity['alert_agreement']:.2%} ({parity['alerts_fp32']} → "
        f"{parity['alerts_int8']} alerts) |\n"
        f"| max abs logit difference | | {parity['max_abs_logit_difference']:.3f} "
        f"(mean {parity['mean_abs_logit_difference']:.3f}) |\n"
        + "".join(f"| max abs difference of output `{name}` | | "
                  f"{other['max_abs_difference']:.3f} |\n"
                  for name, other in parity.get("other_outputs", {}).items())
        + "\n"
        f"Gate: {verdict}\n\n"
        "Padding folded: the exported \"SAME\" padding folded into the convolutions "
        "(`melanoscan.inference.onnx_graph.fold_static_padding`), max abs output difference "
        f"{result['fp32_folded_max_abs_difference']:.1e}. "
        f"Network only, preprocessed inputs, {result['threads']} threads, batch "
        f"{result['batch']}, models timed in turns (median of rounds, best round in "
        "brackets):\n\n"
        "| model | size MB | images/s batched | latency median ms | latency p95 ms |\n"
        "|---|---|---|---|---|\n" + speed_rows
    )


if __name__ == "__main__":
    main()
