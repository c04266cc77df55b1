"""Robustness to acquisition artefacts: melanoma AUC and alerts on corrupted ISIC 2018 test images.

Each bundle scores the ISIC 2018 Task 3 test set (1,512 images; melanoma = the ``MEL`` column of
its one-hot ground truth) as it is, and again with each artefact of
``melanoscan.data.artefacts`` added at one fixed severity. The artefact goes onto the decoded
image at its own resolution, before the model's preprocessing, and predictions come from the
production path (``melanoscan.load_model(bundle).predict``: calibrated probabilities and the
bundle's melanoma alert). Each image's draw is seeded by the benchmark seed, the artefact and the
image id, so every model sees the same corrupted images, and a ``--limit`` run sees the same
corruption as the full run on the images they share.

    python benchmarks/artefacts.py --model shipped=src/melanoscan/model \\
        --model generalise=runs/generalise_224/bundle

Reports per model and artefact: melanoma AUC, its change against the clean images (paired
bootstrap), the benign alert rate (non-melanoma images whose alert fires) and the melanoma
sensitivity at the alert, all with 95% intervals. Models scored before with the same settings
stay in the results (``--fresh`` drops them).
"""

from __future__ import annotations

import argparse
import json
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from _report import RESULTS, command, machine, shown_path, update_section, write_results
from _subset import stratified_subset
from sklearn.metrics import roc_auc_score

from melanoscan import load_model
from melanoscan.data.artefacts import ARTEFACTS, apply_artefact
from melanoscan.data.images import is_image_file, load_rgb
from melanoscan.evaluation.metrics import bootstrap
from melanoscan.evaluation.report import format_estimate
from melanoscan.inference.predictor import Predictor

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "isic2018_task3_test"
RESULTS_FILE = RESULTS / "artefacts.json"
CLEAN = "clean"
# Not the training seed: training draws its artefacts from the albumentations stream of the
# run's seed and DataLoader worker; these are fresh draws of the same functions.
BENCHMARK_SEED = 2018
CHUNK = 64


def read_test_set(data: Path) -> pd.DataFrame:
    """``image``, ``path``, ``melanoma`` for every image of an ISIC one-hot ground-truth set."""
    found = [p for p in sorted(data.glob("*.csv")) if "MEL" in pd.read_csv(p, nrows=0)]
    if len(found) != 1:
        raise SystemExit(f"expected one one-hot ground-truth CSV (with a MEL column) in {data}, "
                         f"found {len(found)}")
    csv_path = found[0]
    table = pd.read_csv(csv_path)
    files = {f.stem.lower(): f for f in data.rglob("*") if f.is_file() and is_image_file(f)}
    table["path"] = table["image"].str.lower().map(files)
    missing = table["path"].isna()
    if missing.any():
        raise SystemExit(f"{missing.sum()} images of {csv_path} not found under {data}")
    table["melanoma"] = table["MEL"] >= 0.5
    return table[["image", "path", "melanoma"]]


def corrupt(image: np.ndarray, image_id: str, condition: str, severity: float, seed: int
            ) -> np.ndarray:
    """The image with one artefact drawn for this (seed, artefact, image); ``clean``: as is."""
    if condition == CLEAN:
        return image
    # Artefact and image enter the seed, so draws do not depend on order or --limit.
    entropy = [seed, list(ARTEFACTS).index(condition), zlib.crc32(image_id.encode())]
    return apply_artefact(condition, image, np.random.default_rng(entropy), severity)


def predict_all(
    predictors: dict[str, Predictor],
    table: pd.DataFrame,
    conditions: Sequence[str],
    severity: float,
    seed: int,
    batch_size: int,
) -> dict[str, dict[str, dict[str, np.ndarray]]]:
    """``{model: {condition: {"score": melanoma probabilities, "alert": alerts}}}``."""
    out: dict[str, dict[str, dict[str, list]]] = {
        name: {c: {"score": [], "alert": []} for c in conditions} for name in predictors
    }
    for condition in conditions:
        for start in range(0, len(table), CHUNK):
            rows = table.iloc[start:start + CHUNK]
            images = [corrupt(np.asarray(load_rgb(path)), image_id, condition, severity, seed)
                      for image_id, path in zip(rows["image"], rows["path"], strict=True)]
            for name, predictor in predictors.items():
                for p in predictor.predict(images, batch_size=batch_size):
                    out[name][condition]["score"].append(p.melanoma_probability)
                    out[name][condition]["alert"].append(p.melanoma_alert)
        print(f"{condition}: {len(table)} images x {len(predictors)} model(s) predicted",
              flush=True)
    return {name: {c: {k: np.asarray(v) for k, v in lists.items()} for c, lists in by.items()}
            for name, by in out.items()}


def condition_figures(
    positive: np.ndarray, clean: np.ndarray, scores: np.ndarray, alerts: np.ndarray,
    samples: int, is_clean: bool,
) -> dict[str, Any]:
    """AUC, paired AUC change against clean, benign alert rate and sensitivity at the alert."""

    def auc_change(y: np.ndarray, before: np.ndarray, after: np.ndarray) -> float:
        return float(roc_auc_score(y, after) - roc_auc_score(y, before))

    return {
        "auc": bootstrap(roc_auc_score, positive, scores, samples=samples).to_dict(),
        "auc_change": None if is_clean else bootstrap(
            auc_change, positive, clean, scores, samples=samples).to_dict(),
        "benign_alert_rate": bootstrap(np.mean, alerts[~positive], samples=samples).to_dict(),
        "sensitivity": bootstrap(np.mean, alerts[positive], samples=samples).to_dict(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", required=True, metavar="NAME=BUNDLE",
                        help="a bundle to score (repeatable)")
    parser.add_argument("--data", type=Path, default=DATA,
                        help="an ISIC one-hot ground-truth set (default: the ISIC 2018 test set)")
    parser.add_argument("--severity", type=float, default=0.5, help="artefact severity, 0-1")
    parser.add_argument("--artefacts", nargs="+", choices=list(ARTEFACTS), default=list(ARTEFACTS))
    parser.add_argument("--limit", type=int, help="score a fixed subset of about N images, "
                        "stratified by melanoma (quick runs)")
    parser.add_argument("--seed", type=int, default=BENCHMARK_SEED, help="artefact draws")
    parser.add_argument("--samples", type=int, default=1000, help="bootstrap resamples")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--backend", choices=["auto", "onnx", "torch"], default="auto")
    parser.add_argument("--fresh", action="store_true",
                        help="drop the models scored before (default: keep and add)")
    args = parser.parse_args()
    if not 0.0 <= args.severity <= 1.0:
        parser.error("--severity must be in [0, 1]")

    table = read_test_set(args.data)
    total = len(table)
    table = table.iloc[stratified_subset(table["melanoma"], args.limit)].reset_index(drop=True)
    positive = table["melanoma"].to_numpy()
    conditions = [CLEAN, *args.artefacts]
    settings = {"data": shown_path(args.data), "images": len(table), "of_images": total,
                "melanoma": int(positive.sum()), "limit": args.limit,
                "severity": args.severity, "seed": args.seed, "conditions": conditions,
                "bootstrap_samples": args.samples}

    if any("=" not in spec for spec in args.model):
        parser.error("--model takes NAME=BUNDLE")
    models = dict(spec.partition("=")[::2] for spec in args.model)
    predictors = {name: load_model(path, backend=args.backend) for name, path in models.items()}
    predictions = predict_all(predictors, table, conditions, args.severity, args.seed,
                              args.batch_size)

    previous = json.loads(RESULTS_FILE.read_text()) if RESULTS_FILE.exists() else {}
    keep = not args.fresh and previous.get("settings") == settings
    results: dict[str, Any] = dict(previous.get("results", {})) if keep else {}
    for name, predictor in predictors.items():
        by = predictions[name]
        clean = by[CLEAN]["score"]
        results[name] = {
            "bundle": models[name],
            "command": command(),
            "backend": predictor.backend,
            "alert_threshold": predictor.alert_threshold,
            "conditions": {
                c: condition_figures(positive, clean, by[c]["score"], by[c]["alert"],
                                     args.samples, c == CLEAN)
                for c in conditions
            },
        }
        for c, figures in results[name]["conditions"].items():
            print(name, c, "AUC", format_estimate(figures["auc"]),
                  "benign alerts", format_estimate(figures["benign_alert_rate"]))

    payload = {"command": command(), "machine": machine(), "settings": settings,
               "results": results}
    path = write_results("artefacts", payload)
    update_section("artefacts", "Robustness to acquisition artefacts (ISIC 2018 test set)",
                   _table(payload))
    print(f"wrote {path}")


def _signed(estimate: dict[str, Any] | None) -> str:
    if estimate is None:
        return "—"
    low, high = estimate["ci95"]
    return f"{estimate['value']:+.3f} [{low:+.3f}, {high:+.3f}]"


def _table(payload: dict[str, Any]) -> str:
    s = payload["settings"]
    subset = (f"a fixed subset stratified by melanoma (`--limit {s['limit']}`) of "
              if s["limit"] else "")
    models = "\n".join(
        f"- **{name}**: `{m['bundle']}` ({m['backend']}), alert threshold "
        f"{m['alert_threshold']:.4f}, scored by `{m['command']}`"
        for name, m in payload["results"].items()
    )
    rows = [
        f"| {name} | {c} | {format_estimate(f['auc'])} | {_signed(f['auc_change'])} "
        f"| {format_estimate(f['benign_alert_rate'])} | {format_estimate(f['sensitivity'])} |"
        for name, m in payload["results"].items()
        for c, f in m["conditions"].items()
    ]
    return (
        f"Command: `{payload['command']}`  \n"
        f"Data: {s['images']} images ({s['melanoma']} melanoma), {subset}the {s['of_images']:,} "
        f"of `{s['data']}`. Each artefact of `melanoscan.data.artefacts` at severity "
        f"{s['severity']}, drawn once per image and artefact from seed {s['seed']} (mixed with "
        "the artefact and the image id), so every model sees the same corrupted images; added "
        "to the decoded image at its own resolution, before the model's preprocessing; "
        "predictions by `melanoscan.load_model(bundle).predict` (calibrated probabilities, the "
        "bundle's alert).\n\n"
        "These are the same functions that training augments with "
        "(`augmentation.artefact_probability`, docs/TRAINING.md), drawn from another seed: a "
        "model trained with that augmentation has seen this kind of corruption, though not these "
        "draws, so its figures measure robustness to this family of artefacts, not to "
        "acquisition differences in general.\n\n"
        "AUC change: corrupted minus clean, paired bootstrap (the same resampled images for "
        "both). Benign alert rate: share of non-melanoma images whose melanoma alert fires. "
        f"95% bootstrap intervals in brackets ({s['bootstrap_samples']} resamples).\n\n"
        + models + "\n\n"
        "| model | artefact | melanoma AUC | AUC change | benign alert rate "
        "| melanoma sensitivity at alert |\n"
        "|---|---|---|---|---|---|\n" + "\n".join(rows)
    )


if __name__ == "__main__":
    main()
