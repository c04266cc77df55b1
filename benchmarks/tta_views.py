"""Which test-time views carry the gain on an unseen archive, and whether averaging models helps.

Scores every image of a labelled source (default: all of ``isic2017/``, which the
leave-ISIC-2017-out models never saw) under each of the 8 dihedral views of
:func:`melanoscan.inference.engine.dihedral_views`, then reports the melanoma AUC of the
averaged logits of a few view subsets, and of the mean calibrated melanoma probability of
several bundles (plain view), with 95% bootstrap intervals.

    python benchmarks/tta_views.py --model loso=runs/loso_isic2017/bundle \
        --model loso-ema=runs/loso_ema_224/bundle
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from _report import ROOT, command, machine, update_section, write_results
from sklearn.metrics import roc_auc_score

from melanoscan import taxonomy
from melanoscan.calibration import softmax
from melanoscan.data.sources import read_sources
from melanoscan.evaluation.metrics import bootstrap
from melanoscan.evaluation.report import format_estimate
from melanoscan.inference.engine import decoded_batches, dihedral_views
from melanoscan.inference.predictor import Predictor

DEFAULT_DATA = ROOT.parent / "shared" / "data" / "isic2017"
VIEW_NAMES = ("as is", "rot 90", "rot 180", "rot 270", "flip", "flip rot 90", "flip rot 180",
              "flip rot 270")
SUBSETS = {"as is": (0,), "as is + flip": (0, 4), "as is + rot 180": (0, 2),
           "4 rotations": (0, 1, 2, 3), "flips x rot 180": (0, 2, 4, 6),
           "all 8 views": tuple(range(8))}


def view_logits(model: Predictor, paths: list[str]) -> np.ndarray:
    """Logits of every image under each of the 8 views ``(8, N, classes)`` (NaN: unreadable).

    Goes through the predictor's runner directly: ``Predictor`` only returns the plain and the
    8-view mean, and the subsets need each view apart."""
    logits = np.full((8, len(paths), len(model.classes)), np.nan, dtype=np.float32)
    for batch in decoded_batches(paths, 32, model.preprocessing):
        for view, pixels in enumerate(dihedral_views(batch.pixels)):
            inputs = model.preprocessing.normalise(np.ascontiguousarray(pixels))
            logits[view, batch.rows] = model._run(inputs)[0]
    return logits


def melanoma_auc(logits: np.ndarray, truth: np.ndarray, model: Predictor,
                 samples: int) -> dict:
    melanoma = softmax(logits, model.temperature)[:, model.classes.index(taxonomy.MELANOMA)]
    return bootstrap(roc_auc_score, truth, melanoma, samples=samples).to_dict()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", required=True, metavar="NAME=BUNDLE")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--samples", type=int, default=1000, help="bootstrap resamples")
    args = parser.parse_args()
    table = read_sources([args.data]).images.sort_values("path")
    paths = table["path"].astype(str).tolist()
    truth = (table["label"] == taxonomy.MELANOMA).to_numpy()
    results, plain = {}, []
    for spec in args.model:
        name, bundle = spec.split("=", 1)
        model = Predictor(bundle, use_gate=False)
        logits = view_logits(model, paths)
        readable = ~np.isnan(logits[0]).any(axis=1)
        results[name] = {subset: melanoma_auc(logits[list(views)].mean(axis=0)[readable],
                                              truth[readable], model, args.samples)
                         for subset, views in SUBSETS.items()}
        results[name]["backend"] = model.backend
        plain.append(softmax(logits[0], model.temperature)[:, model.classes.index(
            taxonomy.MELANOMA)])
        print(name, {k: round(v["value"], 4) for k, v in results[name].items()
                     if isinstance(v, dict)}, flush=True)
    ensemble = None
    if len(plain) > 1:
        mean = np.mean(plain, axis=0)
        readable = ~np.isnan(mean)
        ensemble = bootstrap(roc_auc_score, truth[readable], mean[readable],
                             samples=args.samples).to_dict()
        print("ensemble", round(ensemble["value"], 4))
    payload = {"command": command(), "machine": machine(), "data": str(args.data),
               "images": len(paths), "melanoma": int(truth.sum()), "results": results,
               "ensemble_plain": ensemble}
    write_results("tta_views", payload)
    names = list(results)
    rows = "\n".join(f"| {subset} | " + " | ".join(format_estimate(results[n][subset])
                                                   for n in names) + " |" for subset in SUBSETS)
    averaged = ("" if ensemble is None else
                f"\nThe mean of the models' calibrated melanoma probabilities (as is, no TTA): "
                f"{format_estimate(ensemble)}.\n")
    update_section("tta_views", "Test-time views and model averaging on an unseen archive", f"""
Command: `{payload['command']}`

Data: every image of `{args.data.name}/` ({len(paths)}, {int(truth.sum())} melanoma), which
the models below never saw. Melanoma AUC of the logits averaged over each subset of the 8
dihedral views (as `--tta` averages all 8), with 95% bootstrap intervals ({args.samples}
resamples).
Views: {', '.join(f'{i} {v}' for i, v in enumerate(VIEW_NAMES))}.

| views | {' | '.join(names)} |
|---|{'---|' * len(names)}
{rows}
{averaged}""")


if __name__ == "__main__":
    main()
