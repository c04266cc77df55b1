"""The table of training experiments: config, data, epochs, wall time, validation and test figures.

For each run directory: the committed config it was started from, its data sources and split
sizes, the epochs run and their summed wall time (``metrics.csv``), validation figures of the
kept checkpoint with 95% bootstrap intervals (recomputed from ``validation_predictions.csv``),
and the test figures ``benchmarks/accuracy.py`` measured for the same NAME, if any. Models are
selected on the validation columns only.

    python benchmarks/experiments.py \\
        --run lite0-isic9-8ep=runs/balance_strategies/sampler,configs/efficientnet_lite0.yaml
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from _report import RESULTS, command, machine, update_section, write_results

from melanoscan import taxonomy
from melanoscan.bundle import default_bundle_path, read_metadata
from melanoscan.evaluation.metrics import classification_metrics, melanoma_metrics
from melanoscan.evaluation.report import format_estimate


def validation_figures(run: Path) -> dict:
    return figures_of(pd.read_csv(run / "validation_predictions.csv"))


def figures_of(table: pd.DataFrame) -> dict:
    """Headline figures of a ``validation_predictions.csv`` table (calibrated probabilities)."""
    table = table[table["readable"]]
    classes = list(taxonomy.CLASSES)
    labels = table["label"].map(classes.index).to_numpy()
    probabilities = table[classes].to_numpy(dtype=np.float64)
    metrics = classification_metrics(labels, probabilities, classes,
                                     positive_class=taxonomy.MELANOMA, alert_threshold=None)
    return {"images": len(table), "accuracy": metrics["accuracy"],
            "balanced_accuracy": metrics["balanced_accuracy"],
            "melanoma_auc": metrics["melanoma"]["auc"],
            "old_archive": _old_archive_figures(table)}


# ISIC ids below this one predate HAM10000. isic9/Test's melanomas and nevi are all from that
# older archive, while most training ones come from HAM10000: the validation images of the old
# archive are the closest the validation split gets to that shift.
FIRST_HAM10000_ID = 24306
TIE = 0.01


def _old_archive_figures(table: pd.DataFrame) -> dict:
    ids = table["path"].str.extract(r"ISIC_(\d+)", expand=False).astype(float)
    old = table[ids < FIRST_HAM10000_ID]
    positive = (old["label"] == taxonomy.MELANOMA).to_numpy()
    melanoma = melanoma_metrics(positive, old[taxonomy.MELANOMA].to_numpy(), None)
    return {"images": len(old), "melanomas": int(positive.sum()), "melanoma_auc": melanoma["auc"]}


def describe(name: str, run: Path, config: str, accuracy: dict) -> dict:
    metrics = pd.read_csv(run / "metrics.csv")
    resolved = yaml.safe_load((run / "config.yaml").read_text())
    summary = json.loads((run / "data_summary.json").read_text())
    counts = {split: sum(per_class.values()) for split, per_class in summary["counts"].items()}
    return {
        "name": name,
        "run": str(run),
        "config": config,
        "model": _model_label(resolved["model"]),
        "data": summary["sources"],
        "images": counts,
        "excluded": summary["excluded"],
        "epochs": len(metrics),
        "wall_minutes": float(metrics["epoch_seconds"].sum() / 60),
        "shipped": _is_shipped(run),
        "validation": validation_figures(run),
        "test": {test_set: _headline(test) for test_set, test
                 in accuracy.get(name, {}).get("test_sets", {}).items()},
    }


def _is_shipped(run: Path) -> bool:
    """True if the run's bundle is the one in the package (ship_model.py copies it whole)."""
    bundle = run / "bundle"
    return bundle.exists() and (
        read_metadata(bundle).created == read_metadata(default_bundle_path()).created)


def _headline(test: dict) -> dict:
    plain = test["results"]["plain"]
    return {"images": test["images"], "accuracy": plain["accuracy"],
            "balanced_accuracy": plain["balanced_accuracy"],
            "melanoma_auc": plain["melanoma"]["auc"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", action="append", required=True, metavar="NAME=RUN_DIR,CONFIG")
    args = parser.parse_args()
    accuracy_file = RESULTS / "accuracy.json"
    accuracy = json.loads(accuracy_file.read_text())["results"] if accuracy_file.exists() else {}
    experiments = []
    for spec in args.run:
        name, _, rest = spec.partition("=")
        run, _, config = rest.partition(",")
        experiments.append(describe(name, Path(run), config, accuracy))
        print(name, format_estimate(experiments[-1]["validation"]["balanced_accuracy"]))
    payload = {"command": command(), "machine": machine(), "experiments": experiments}
    write_results("experiments", payload)
    update_section("experiments", "Training experiments", _table(payload))


def _test(experiment: dict, test_set: str, figure: str) -> str:
    headline = experiment["test"].get(test_set)
    return format_estimate(headline[figure]) if headline else "not scored"


def _old_archive(experiment: dict) -> str:
    old = experiment["validation"].get("old_archive")
    if not old:
        return "n/a"
    return f"{format_estimate(old['melanoma_auc'])} (n={old['images']}, {old['melanomas']} mel)"


def _table(payload: dict) -> str:
    rows = []
    for e in payload["experiments"]:
        data = " + ".join(Path(d).name for d in e["data"])
        rows.append(
            f"| {'**' + e['name'] + '** (shipped)' if e.get('shipped') else e['name']} "
            f"| `{e['config']}` | {e['model']} | {data} "
            f"({e['images'].get('train', 0)} train / {e['images'].get('val', 0)} val) "
            f"| {e['epochs']} | {e['wall_minutes']:.0f} "
            f"| {format_estimate(e['validation']['balanced_accuracy'])} "
            f"| {format_estimate(e['validation']['melanoma_auc'])} "
            f"| {_old_archive(e)} "
            f"| {_test(e, 'isic9/Test', 'accuracy')} "
            f"| {_test(e, 'isic9/Test', 'balanced_accuracy')} "
            f"| {_test(e, 'isic9/Test', 'melanoma_auc')} "
            f"| {_test(e, 'isic2018_task3_test', 'balanced_accuracy')} "
            f"| {_test(e, 'isic2018_task3_test', 'melanoma_auc')} |"
        )
    return (
        f"Command: `{payload['command']}`  \n"
        "Validation figures are those of the kept checkpoint (best validation balanced accuracy) "
        "on the run's own validation split; models are chosen on them only. Test figures (plain, "
        "no TTA) come from `benchmarks/accuracy.py` (isic9/Test: 118 images; ISIC 2018: 1,512 "
        "images, 7 codes). 95% bootstrap intervals. Wall time: training plus validation epochs "
        "on this 2-core CPU, as logged. 'not scored': a run that lost on validation is not run "
        "on the test sets. Old-archive columns: the validation images with ISIC ids below "
        f"{FIRST_HAM10000_ID} (older than HAM10000; melanomas and nevi only), where isic9/Test's "
        "melanomas and nevi come from.\n\n"
        "Selection rule (validation only): the highest validation balanced accuracy ships; runs "
        f"within {TIE:.2f} of each other are tied (the intervals are about ten times wider), and "
        "a tie goes to the higher old-archive melanoma AUC.\n\n"
        "| experiment | config | model | data (images) | epochs | minutes | val balanced acc "
        "| val melanoma AUC | val old-archive melanoma AUC | isic9/Test acc "
        "| isic9/Test balanced acc | isic9/Test melanoma AUC "
        "| ISIC 2018 balanced acc | ISIC 2018 melanoma AUC |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n" + "\n".join(rows)
    )


def _model_label(model: dict) -> str:
    constancy = model.get("colour_constancy", "none")
    extra = "" if constancy == "none" else f", {constancy.replace('_', ' ')}"
    return f"{model['name']} {model['image_size']}px{extra}"


if __name__ == "__main__":
    main()
