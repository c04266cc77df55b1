"""Choose an int8 setting on validation images only, by a rule fixed before running.

Quantises a bundle's fp32 ONNX model with each candidate setting (float prefix x calibration
images) and checks each against fp32 on the same random validation images of the bundle
(:func:`melanoscan.inference.bundle_images.validation_inputs`). The rule: the highest
min(top-1 agreement, alert agreement); ties go to the setting with fewer float blocks, then
fewer calibration images. The chosen setting is then checked once on a test set with
``melanoscan export --int8 --parity-data`` (docs/INT8.md).

    python benchmarks/int8_settings.py --model runs/generalise_224/bundle_half \
        --data ../shared/data/isic9 --data ../shared/data/ham10000 \
        --data ../shared/data/ham10000_more --data ../shared/data/isic2017
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from _report import command, machine, update_section, write_results

from melanoscan import taxonomy
from melanoscan.bundle import onnx_path, read_metadata
from melanoscan.inference.bundle_images import calibration_inputs, validation_inputs
from melanoscan.inference.parity import parity_report
from melanoscan.inference.quantize import (
    EFFICIENTNET_FLOAT_PREFIX,
    QuantizationSettings,
    quantize_int8,
)

FLOAT_PREFIXES = {
    "stem + blocks 0-2": EFFICIENTNET_FLOAT_PREFIX,
    "stem + blocks 0-3": (*EFFICIENTNET_FLOAT_PREFIX, "/model/blocks/blocks.3/*"),
}
CALIBRATION_COUNTS = (300, 1000)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True, help="bundle with model.onnx")
    parser.add_argument("--data", type=Path, action="append", required=True,
                        help="where its training and validation images are (repeatable)")
    parser.add_argument("--images", type=int, default=1000, help="validation images")
    args = parser.parse_args()
    metadata = read_metadata(args.model)
    fp32 = onnx_path(args.model, metadata)
    if not fp32.is_file():
        raise SystemExit(f"{args.model} has no model.onnx: run melanoscan export --model "
                         f"{args.model}")
    calibration = metadata.calibration
    inputs, melanoma = validation_inputs(args.model, args.images, sources=args.data)
    rows = []
    for count in CALIBRATION_COUNTS:
        calibrating = calibration_inputs(args.model, count, sources=args.data)
        for prefix, patterns in FLOAT_PREFIXES.items():
            with tempfile.TemporaryDirectory() as tmp:
                int8 = quantize_int8(fp32, Path(tmp) / "model.int8.onnx", calibrating,
                                     QuantizationSettings(keep_float=patterns))
                report = parity_report(
                    fp32, int8, inputs, melanoma, float(calibration["temperature"]),
                    float(calibration["alert_threshold"]),
                    metadata.classes.index(taxonomy.MELANOMA))
            rows.append({"float": prefix, "calibration_images": count,
                         "top1_agreement": report["top1_agreement"],
                         "alert_agreement": report["alert_agreement"],
                         "auc_difference": report["auc_difference"]})
            print(rows[-1], flush=True)
    chosen = max(rows, key=lambda r: (min(r["top1_agreement"], r["alert_agreement"]),
                                      -list(FLOAT_PREFIXES).index(r["float"]),
                                      -r["calibration_images"]))
    payload = {"command": command(), "machine": machine(), "model": str(args.model),
               "validation_images": len(inputs), "rows": rows, "chosen": chosen}
    write_results("int8_settings", payload)
    table = "\n".join(
        f"| {r['float']} | {r['calibration_images']} | {r['top1_agreement']:.1%} | "
        f"{r['alert_agreement']:.1%} | {r['auc_difference']:+.4f} |"
        + (" **chosen** |" if r is chosen else " |") for r in rows)
    update_section("int8_settings", "int8 setting chosen on validation", f"""
Command: `{payload['command']}`

Model `{args.model}`; each setting quantised and compared with fp32 on the same
{len(inputs)} random validation images of the bundle (never a test set). Rule, fixed before
running: highest min(top-1, alert agreement); ties to fewer float blocks, then fewer
calibration images. The chosen setting's one test look is in docs/INT8.md.

| kept float | calibration images | top-1 agreement | alert agreement | AUC change | |
|---|---|---|---|---|---|
{table}
""")


if __name__ == "__main__":
    main()
