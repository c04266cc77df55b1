"""Would an ensemble help? Averaged validation probabilities of finished runs, on validation only.

Each run's ``validation_predictions.csv`` holds its calibrated probabilities on the same
validation split (same data and split seed, checked here); an ensemble averages them. The test
sets are not touched: this decides whether an ensemble is worth shipping, and the inference cost
grows with each member (see the inference table).

    python benchmarks/ensembles.py --run balanced=runs/lite0_isic9_ham_160 \\
        --run sqrt=runs/lite0_isic9_ham_160_sqrt --ensemble balanced+sqrt
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
from _report import command, machine, update_section, write_results
from experiments import figures_of

from melanoscan import taxonomy
from melanoscan.evaluation.report import format_estimate


def average(tables: list[pd.DataFrame]) -> pd.DataFrame:
    """The first table with each class column replaced by the mean over all tables."""
    first = tables[0].set_index("path")
    classes = list(taxonomy.CLASSES)
    probabilities, readable = [], []
    for table in tables:
        table = table.set_index("path")
        same_images = set(table.index) == set(first.index)
        if not same_images or not (table.loc[first.index, "label"] == first["label"]).all():
            raise SystemExit("the runs were validated on different images: not comparable")
        table = table.loc[first.index]
        probabilities.append(table[classes].to_numpy(dtype=np.float64))
        readable.append(table["readable"].to_numpy(dtype=bool))
    merged = first.copy()
    merged[classes] = np.mean(probabilities, axis=0)
    merged["readable"] = np.logical_and.reduce(readable)
    return merged.reset_index()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", action="append", required=True, metavar="NAME=RUN_DIR")
    parser.add_argument("--ensemble", action="append", default=[], metavar="NAME+NAME[+...]")
    args = parser.parse_args()
    runs = dict(spec.split("=", 1) for spec in args.run)
    tables = {name: pd.read_csv(Path(run) / "validation_predictions.csv")
              for name, run in runs.items()}
    rows = []
    for members in [[name] for name in runs] + [e.split("+") for e in args.ensemble]:
        unknown = [m for m in members if m not in tables]
        if unknown:
            raise SystemExit(f"unknown run name(s) {unknown}; give them with --run")
        figures = figures_of(average([tables[m] for m in members]))
        rows.append({"members": members, "validation": figures})
        print(" + ".join(members), format_estimate(figures["balanced_accuracy"]), flush=True)
    payload = {"command": command(), "machine": machine(), "runs": runs, "rows": rows}
    write_results("ensembles", payload)
    lines = "\n".join(
        f"| {' + '.join(r['members'])} | {len(r['members'])} "
        f"| {format_estimate(r['validation']['accuracy'])} "
        f"| {format_estimate(r['validation']['balanced_accuracy'])} "
        f"| {format_estimate(r['validation']['melanoma_auc'])} "
        f"| {format_estimate(r['validation']['old_archive']['melanoma_auc'])} |"
        for r in rows
    )
    members = ", ".join(f"{name} = `{run}`" for name, run in runs.items())
    update_section("ensembles", "Ensembles, on validation only", f"""
Command: `{payload['command']}`

Mean of the members' calibrated probabilities on their common validation split
({rows[0]['validation']['images']} images); 95% bootstrap intervals. No test set is used.
Runs: {members}. Each member adds its own inference cost.

| members | models | val acc | val balanced acc | val melanoma AUC | val old-archive mel AUC |
|---|---|---|---|---|---|
{lines}
""")


if __name__ == "__main__":
    main()
