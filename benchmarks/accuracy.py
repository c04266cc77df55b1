"""Accuracy of model bundles on the two held-out test sets, with 95% bootstrap intervals.

Each bundle is scored once per test set, with ``melanoscan.evaluation.evaluate`` (images the
bundle trained or validated on are left out and counted) on:

* ``isic9/Test``: 118 images, 9 classes;
* ``isic2018_task3_test``: the 1,512-image ISIC 2018 Task 3 test set, 7 classes (9-class
  probabilities summed per code, docs/TAXONOMY.md).

    python benchmarks/accuracy.py --model lite0=runs/lite0/bundle \\
        --model notebook=runs/notebook_baseline/bundle --tta

Models scored by an earlier run stay in the results (``--fresh`` drops them).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from _report import RESULTS, command, machine, update_section, write_results

from melanoscan import load_bundle
from melanoscan.evaluation.evaluate import evaluate
from melanoscan.evaluation.report import format_estimate
from melanoscan.inference.predictor import Predictor

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
ACCURACY = RESULTS / "accuracy.json"
TEST_SETS = {
    "isic9/Test": ([DATA / "isic9"], "test"),
    "isic2018_task3_test": ([DATA / "isic2018_task3_test"], None),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", required=True, metavar="NAME=BUNDLE")
    parser.add_argument("--tta", action="store_true", help="also score with TTA")
    parser.add_argument("--backend", default="auto", help="auto, onnx or torch (as predict)")
    parser.add_argument("--samples", type=int, default=1000, help="bootstrap resamples")
    parser.add_argument("--fresh", action="store_true",
                        help="drop the models scored before (default: keep and add)")
    args = parser.parse_args()

    # Models scored before keep their figures: each test set is scored once per model.
    previous = json.loads(ACCURACY.read_text())["results"] if ACCURACY.exists() else {}
    results: dict[str, dict] = {} if args.fresh else previous
    for spec in args.model:
        name, _, path = spec.partition("=")
        bundle = load_bundle(path)
        results[name] = {"bundle": path, "command": command(),
                         "calibration": bundle.metadata.calibration,
                         "training": bundle.metadata.training.get("counts"), "test_sets": {}}
        for test_name, (data, split) in TEST_SETS.items():
            evaluation = evaluate(Predictor(path, backend=args.backend), data, split=split,
                                  tta=args.tta,
                                  bootstrap_samples=args.samples)
            report = evaluation.report
            results[name]["test_sets"][test_name] = {
                "images": report["data"]["scored"],
                "training_overlap_left_out": report["data"]["training_overlap"]["count"],
                "skipped": len(report["data"]["skipped"]),
                "taxonomy": report["taxonomy"],
                "backend": report["model"]["backend"],
                "results": report["results"],
            }
            print(name, test_name, format_estimate(report["results"]["plain"]["accuracy"]))

    payload = {"command": command(), "machine": machine(), "results": results}
    path = write_results("accuracy", payload)
    update_section("accuracy", "Accuracy on the held-out test sets", _table(payload))
    print(f"wrote {path}")


def _table(payload: dict) -> str:
    header = (
        "| model | test set (images) | result | accuracy | balanced accuracy | macro AUC "
        "| melanoma AUC | melanoma sensitivity at alert | melanoma specificity at alert |\n"
        "|---|---|---|---|---|---|---|---|---|\n"
    )
    rows = []
    for name, model in payload["results"].items():
        for test_name, test in model["test_sets"].items():
            for result_name, m in test["results"].items():
                mel = m["melanoma"]
                rows.append(
                    f"| {name} | {test_name} ({test['images']}, {test['taxonomy']}) "
                    f"| {result_name} | {format_estimate(m['accuracy'])} "
                    f"| {format_estimate(m['balanced_accuracy'])} "
                    f"| {format_estimate(m['macro_auc'])} | {format_estimate(mel['auc'])} "
                    f"| {format_estimate(mel['sensitivity'])} "
                    f"| {format_estimate(mel['specificity'])} |"
                )
    models = "\n".join(
        f"- **{name}**: `{m['bundle']}`, scored by `{m.get('command', payload['command'])}`; "
        "alert threshold "
        f"{m['calibration'].get('alert_threshold'):.4f} (target sensitivity "
        f"{m['calibration'].get('target_sensitivity')}, fitted on "
        f"{m['calibration'].get('fitted_on')})"
        for name, m in payload["results"].items()
    )
    return (
        "95% bootstrap intervals (1,000 resamples). Images a model trained or validated on are "
        "left out of its score. ISIC 2018 figures are on its 7 codes (9-class probabilities "
        "summed per code).\n\n" + models + "\n\n" + header + "\n".join(rows)
    )


if __name__ == "__main__":
    main()
