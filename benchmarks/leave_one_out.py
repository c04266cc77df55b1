"""Leave one source out: a bundle on every image of a source it never saw, against its validation.

The bundle should come from a run whose ``data.holdout_sources`` lists the held-out source
(``configs/lite0_generalise_224_loso_isic2017.yaml`` holds out ``isic2017/``): nothing of that
source, and no copy, lesion or near duplicate of it in the other sources, was trained or
validated on. The held-out source is scored whole with ``melanoscan.evaluation.evaluate``, which
also leaves out (and counts) any image whose pixels the bundle trained on, and is set next to the
bundle's in-domain validation figures.

    python benchmarks/leave_one_out.py --model loso-isic2017=runs/loso_isic2017/bundle --tta

Models scored before with the same ``--limit`` stay in the results (``--fresh`` drops them).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd
from _report import RESULTS, command, machine, shown_path, update_section, write_results
from _subset import stratified_subset

from melanoscan import load_bundle, taxonomy
from melanoscan.bundle import Bundle
from melanoscan.data.manifest import MANIFEST_COLUMNS
from melanoscan.data.sources import read_sources
from melanoscan.evaluation.evaluate import evaluate
from melanoscan.evaluation.metrics import classification_metrics
from melanoscan.evaluation.report import format_estimate
from melanoscan.inference.predictor import Predictor

ROOT = Path(__file__).resolve().parents[1]
HOLDOUT = ROOT.parent / "shared" / "data" / "isic2017"
RESULTS_FILE = RESULTS / "leave_one_out.json"
FIGURES = ("accuracy", "balanced_accuracy")


def held_out_in_training(bundle: Bundle, holdout: Path) -> bool:
    """Whether the bundle's run listed ``holdout`` in ``data.holdout_sources``."""
    listed = bundle.metadata.training.get("config", {}).get("data", {}).get("holdout_sources", [])
    # The run resolved them from its own working directory: the repository root.
    return any((ROOT / p).resolve() == holdout.resolve() for p in listed)


def holdout_figures(
    model: Predictor, holdout: Path, limit: int | None, tta: bool, samples: int
) -> dict[str, Any]:
    """The evaluation of ``model`` on the held-out source (or a stratified subset of it)."""
    with tempfile.TemporaryDirectory() as tmp:
        data = [holdout]
        if limit is not None:
            table = read_sources([holdout]).images
            subset = table.iloc[stratified_subset(table["label"], limit)]
            # A manifest CSV is read as it is: labels, taxonomy and split kept.
            data = [Path(tmp) / "subset.csv"]
            subset[list(MANIFEST_COLUMNS)].to_csv(data[0], index=False)
        evaluation = evaluate(model, data, tta=tta, bootstrap_samples=samples)
    report = evaluation.report
    return {
        "images": report["data"]["scored"],
        "images_found": report["data"]["images_found"],
        "training_overlap_left_out": report["data"]["training_overlap"]["count"],
        "skipped": len(report["data"]["skipped"]),
        "taxonomy": report["taxonomy"],
        "backend": report["model"]["backend"],
        "classes_present": sorted({report["classes"][i] for i in evaluation.labels}),
        "results": {name: _summary(r) for name, r in report["results"].items()},
    }


def in_domain_figures(bundle: Bundle, samples: int) -> dict[str, Any]:
    """The bundle's validation figures; with intervals when its run's predictions are beside it.

    ``validation_predictions.csv`` holds the calibrated probabilities the alert threshold was
    fitted on; it is used only while the bundle keeps that calibration.
    """
    validation = bundle.metadata.validation_metrics
    calibration = bundle.metadata.calibration
    run_dir = bundle.path.parent
    predictions = run_dir / "validation_predictions.csv"
    fitted_here = str(calibration.get("fitted_on", "")).startswith(
        f"validation split of training run {run_dir.name}")
    if predictions.exists() and fitted_here:
        table = pd.read_csv(predictions)
        table = table[table["readable"].astype(bool)]
        classes = list(taxonomy.CLASSES)
        metrics = classification_metrics(
            table["label"].map(classes.index).to_numpy(), table[classes].to_numpy(), classes,
            positive_class=taxonomy.MELANOMA, alert_threshold=calibration.get("alert_threshold"),
            samples=samples,
        )
        return {"images": len(table), "source": str(predictions), **_summary(metrics)}

    def point(value: float | None) -> dict[str, Any] | None:
        return None if value is None else {"value": value, "ci95": None}

    return {
        "images": validation.get("images"),
        "source": "bundle.json validation_metrics (no intervals)",
        "accuracy": point(validation.get("accuracy")),
        "balanced_accuracy": point(validation.get("balanced_accuracy")),
        "melanoma_auc": point(validation.get("melanoma_auc")),
        "sensitivity": None,
        "specificity": None,
    }


def _summary(metrics: dict[str, Any]) -> dict[str, Any]:
    melanoma = metrics["melanoma"]
    return {
        **{key: metrics[key] for key in FIGURES},
        "melanoma_auc": melanoma["auc"],
        "sensitivity": melanoma["sensitivity"],
        "specificity": melanoma["specificity"],
        "alert_threshold": melanoma["threshold"],
        "melanoma_images": melanoma["positives"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", required=True, metavar="NAME=BUNDLE",
                        help="a bundle trained with the source in data.holdout_sources")
    parser.add_argument("--holdout", type=Path, default=HOLDOUT,
                        help="the held-out source (default: isic2017)")
    parser.add_argument("--tta", action="store_true", help="also score with TTA")
    parser.add_argument("--backend", default="auto", help="auto, onnx or torch (as predict)")
    parser.add_argument("--limit", type=int, help="score a fixed subset of about N images, "
                        "stratified by label (quick runs)")
    parser.add_argument("--samples", type=int, default=1000, help="bootstrap resamples")
    parser.add_argument("--fresh", action="store_true",
                        help="drop the models scored before (default: keep and add)")
    args = parser.parse_args()
    if any("=" not in spec for spec in args.model):
        parser.error("--model takes NAME=BUNDLE")

    previous = json.loads(RESULTS_FILE.read_text())["results"] if RESULTS_FILE.exists() else {}
    # A quick --limit run never sits in one table with full ones.
    results: dict[str, Any] = {} if args.fresh else {
        name: m for name, m in previous.items() if m.get("limit") == args.limit
    }
    for spec in args.model:
        name, _, path = spec.partition("=")
        bundle = load_bundle(path)
        held_out = held_out_in_training(bundle, args.holdout)
        if not held_out:
            print(f"warning: {name} was not trained with {args.holdout} in data.holdout_sources;"
                  " images it trained on are left out, but its other sources may share lesions"
                  " with it: not a leave-one-source-out figure")
        results[name] = {
            "bundle": path,
            "command": command(),
            "holdout": shown_path(args.holdout),
            "held_out_in_training": held_out,
            "limit": args.limit,
            "calibration": bundle.metadata.calibration,
            "in_domain": in_domain_figures(bundle, args.samples),
            "held_out_source": holdout_figures(Predictor(path, backend=args.backend),
                                               args.holdout, args.limit, args.tta, args.samples),
        }
        for result, figures in results[name]["held_out_source"]["results"].items():
            print(name, result, "melanoma AUC", format_estimate(figures["melanoma_auc"]),
                  "in domain", format_estimate(results[name]["in_domain"]["melanoma_auc"]))

    payload = {"command": command(), "machine": machine(), "results": results}
    path = write_results("leave_one_out", payload)
    update_section("leave_one_out", "Leave one source out", _table(payload))
    print(f"wrote {path}")


def _table(payload: dict[str, Any]) -> str:
    rows = []
    for name, m in payload["results"].items():
        inside = m["in_domain"]
        rows.append(_row(name, f"in-domain validation ({inside['images']})", "plain", inside))
        held = m["held_out_source"]
        where = (f"{m['holdout']} ({held['images']}"
                 + (f", subset `--limit {m['limit']}`" if m["limit"] else "")
                 + f"; {held['training_overlap_left_out']} trained-on left out)")
        rows += [_row(name, where, result, figures) for result, figures in held["results"].items()]
    models = "\n".join(
        f"- **{name}**: `{m['bundle']}`, scored by `{m['command']}`; "
        + ("trained with " if m["held_out_in_training"] else "**not** trained with ")
        + f"`{m['holdout']}` in `data.holdout_sources`; alert threshold "
        + (f"{m['calibration']['alert_threshold']:.4f}"
           if m["calibration"].get("alert_threshold") is not None else "unset")
        + f" (fitted on {m['calibration'].get('fitted_on')})"
        for name, m in payload["results"].items()
    )
    return (
        "A model trained with a source in `data.holdout_sources` (docs/TRAINING.md) never saw that "
        "source, nor any copy, lesion or near duplicate of it in its other sources. It is scored "
        "here on every image of the held-out source, next to its own validation split (drawn "
        "from the sources it trained on). Images whose pixels the model trained on are left out "
        "and counted (0 for a leave-one-source-out model). 95% bootstrap intervals; in-domain "
        "figures without intervals come from the bundle's metadata. The in-domain alert "
        "sensitivity is fitted on those same images (target 0.95), so only the held-out one is "
        "a test of it; balanced accuracy is over the classes each set holds (isic2017: "
        "melanoma, nevus, seborrheic keratosis).\n\n"
        + models + "\n\n"
        "| model | scored on (images) | result | melanoma AUC | balanced accuracy | accuracy "
        "| melanoma sensitivity at alert | melanoma specificity at alert |\n"
        "|---|---|---|---|---|---|---|---|\n" + "\n".join(rows)
    )


def _row(name: str, where: str, result: str, f: dict[str, Any]) -> str:
    return (
        f"| {name} | {where} | {result} | {format_estimate(f['melanoma_auc'])} "
        f"| {format_estimate(f['balanced_accuracy'])} | {format_estimate(f['accuracy'])} "
        f"| {format_estimate(f['sensitivity'])} | {format_estimate(f['specificity'])} |"
    )


if __name__ == "__main__":
    main()
