"""Which imbalance strategy should be the default? Train the same model three ways and compare.

Trains ``configs/efficientnet_lite0.yaml`` with ``balance.strategy`` set to ``sampler``,
``weighted_loss`` and ``none`` on the same leak-free split, and compares them on the
validation split only (no test set is used for this choice).

    python benchmarks/balance_strategies.py --data ../shared/data/isic9 --epochs 8
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd
from _report import command, machine, update_section, write_results

from melanoscan import taxonomy
from melanoscan.evaluation.metrics import balanced_accuracy, bootstrap
from melanoscan.training.config import apply_overrides, load_config
from melanoscan.training.run import train

STRATEGIES = ("sampler", "weighted_loss", "none")
ROOT = Path(__file__).resolve().parents[1]


def score(run_dir: Path) -> dict:
    table = pd.read_csv(run_dir / "validation_predictions.csv")
    table = table[table["readable"]]
    classes = list(taxonomy.CLASSES)
    labels = table["label"].map(classes.index).to_numpy()
    predicted = table["predicted"].map(classes.index).to_numpy()
    melanoma = labels == classes.index(taxonomy.MELANOMA)
    metrics = pd.read_csv(run_dir / "metrics.csv")
    return {
        "val_images": len(table),
        "accuracy": bootstrap(lambda a, b: float(np.mean(a == b)), labels, predicted).to_dict(),
        "balanced_accuracy": bootstrap(balanced_accuracy, labels, predicted).to_dict(),
        "melanoma_recall": bootstrap(
            lambda p: float(np.mean(p == classes.index(taxonomy.MELANOMA))), predicted[melanoma]
        ).to_dict(),
        "epochs_run": len(metrics),
        "best_epoch": int(metrics["val_balanced_accuracy"].idxmax()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, nargs="+", required=True)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--config", type=Path, default=ROOT / "configs/efficientnet_lite0.yaml")
    parser.add_argument("--out", type=Path, default=ROOT / "runs/balance_strategies")
    parser.add_argument("--strategies", nargs="+", choices=STRATEGIES, default=list(STRATEGIES))
    args = parser.parse_args()

    results = {}
    for strategy in args.strategies:
        run_dir = args.out / strategy
        if not (run_dir / "bundle" / "bundle.json").exists():
            config = apply_overrides(
                load_config(args.config),
                {"balance.strategy": strategy, "epochs": args.epochs,
                 "early_stopping_patience": 0},
            )
            started = time.perf_counter()
            train(args.data, run_dir, config, resume=(run_dir / "checkpoints/last.ckpt").exists())
            print(f"{strategy}: {time.perf_counter() - started:.0f} s")
        results[strategy] = score(run_dir)

    payload = {"command": command(), "machine": machine(), "data": [str(d) for d in args.data],
               "epochs": args.epochs, "config": str(args.config.relative_to(ROOT)),
               "results": results}
    path = write_results("balance_strategies", payload)
    rows = [
        f"| `{s}` | {r['val_images']} | {_fmt(r['accuracy'])} | {_fmt(r['balanced_accuracy'])} "
        f"| {_fmt(r['melanoma_recall'])} | {r['best_epoch'] + 1} / {r['epochs_run']} |"
        for s, r in results.items()
    ]
    body = (
        f"Command: `{payload['command']}`  \n"
        f"Data: {', '.join(payload['data'])}; the split's validation images (the test split is "
        f"never used). Model: `{payload['config']}`, {args.epochs} epochs, "
        f"{machine()['cpu_cores']} CPU cores. Figures are on the validation split with 95% "
        "bootstrap intervals; one seed per strategy.\n\n"
        "| balance.strategy | val images | accuracy | balanced accuracy | melanoma recall "
        "| best epoch |\n|---|---|---|---|---|---|\n" + "\n".join(rows)
    )
    update_section("balance_strategies", "Imbalance strategy (validation split)", body)
    print(f"wrote {path}")


def _fmt(estimate: dict) -> str:
    low, high = estimate["ci95"]
    return f"{estimate['value']:.3f} [{low:.3f}, {high:.3f}]"


if __name__ == "__main__":
    main()
