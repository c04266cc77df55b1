"""Training throughput: images/s of both models, and of each training lever, on this machine.

Builds a class-folder subset of a dataset (symlinks, N images per class), then trains each
variant for a few epochs on it with an empty disk cache, so the first epoch decodes and resizes
every JPEG and later epochs only augment cached arrays. Reports per-epoch wall time and training
images/s from the run's own metrics.csv.

The Lite0 variants change one lever each against the Lite0 baseline (float32, channels-last,
224 px batches, disk cache, default loader workers): bf16 autocast, channels-first, 160 px batches
(what the ``low_res_epochs`` of progressive resizing train at; here every epoch), no cache (every
epoch decodes and resizes every JPEG), no loader worker, and the acquisition-artefact
augmentation of the generalisation recipe. Compare the last epoch: the first one fills the cache.

    python benchmarks/train_throughput.py --data ../shared/data/isic9/Train --per-class 60
    python benchmarks/train_throughput.py --data ../shared/data/isic9/Train \\
        --variants lite0 lite0-bf16
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import pandas as pd
from _report import command, machine, update_section, write_results

from melanoscan.data.images import is_image_file
from melanoscan.training.config import apply_overrides, load_config
from melanoscan.training.datamodule import default_num_workers
from melanoscan.training.run import train

ROOT = Path(__file__).resolve().parents[1]
CNN = ROOT / "configs/assignment_cnn_notebook.yaml"
LITE0 = ROOT / "configs/efficientnet_lite0.yaml"
BASELINE = "lite0"
# key: (table name, config, overrides). Every Lite0 variant changes one lever of the baseline;
# precision is explicit so that the baseline is float32 on a GPU machine too.
VARIANTS: dict[str, tuple[str, Path, dict[str, object]]] = {
    "cnn": ("assignment_cnn", CNN, {}),
    BASELINE: ("efficientnet_lite0", LITE0, {"precision": "32-true"}),
    "lite0-bf16": ("efficientnet_lite0, bf16 autocast", LITE0, {"precision": "bf16-mixed"}),
    "lite0-channels-first": ("efficientnet_lite0, channels-first", LITE0,
                             {"precision": "32-true", "channels_last": False}),
    "lite0-160px": ("efficientnet_lite0, 160 px batches (low-res epochs)", LITE0,
                    {"precision": "32-true", "low_res_epochs": 1_000, "low_res_size": 160}),
    "lite0-no-cache": ("efficientnet_lite0, no cache", LITE0,
                       {"precision": "32-true", "data.cache": "none"}),
    "lite0-no-worker": ("efficientnet_lite0, no loader worker", LITE0,
                        {"precision": "32-true", "data.num_workers": 0}),
    "lite0-artefacts": ("efficientnet_lite0, artefact augmentation 0.12", LITE0,
                        {"precision": "32-true", "augmentation.artefact_probability": 0.12}),
}


def subset(source: Path, per_class: int, target: Path) -> int:
    count = 0
    for class_dir in sorted(p for p in source.iterdir() if p.is_dir()):
        files = sorted(f for f in class_dir.iterdir() if is_image_file(f))[:per_class]
        (target / class_dir.name).mkdir(parents=True)
        for f in files:
            (target / class_dir.name / f.name).symlink_to(f.resolve())
        count += len(files)
    return count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="a class-folder tree")
    parser.add_argument("--per-class", type=int, default=60)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS),
                        help="which variants to train (default: all)")
    args = parser.parse_args()

    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        images = subset(args.data, args.per_class, data)
        for index, key in enumerate(args.variants):
            name, config_path, extra = VARIANTS[key]
            config = apply_overrides(load_config(config_path), {
                "epochs": args.epochs, "early_stopping_patience": 0,
                "balance.strategy": "sampler", "augmentation.online": True,
                "data.cache": "disk", "data.cache_dir": str(Path(tmp) / f"cache-{index}"),
                **extra,
            })
            run = train([data], Path(tmp) / f"run-{index}", config, show_progress=False)
            metrics = pd.read_csv(run.run_dir / "metrics.csv")
            counts = pd.read_csv(run.run_dir / "split.csv")["split"].value_counts()
            results[name] = {
                "variant": key,
                "loader_workers": config.data.num_workers
                if config.data.num_workers is not None else default_num_workers(),
                "image_size": config.model.image_size,
                "train_size": min(config.low_res_size, config.model.image_size or 0)
                if config.low_res_epochs >= args.epochs else config.model.image_size,
                "precision": config.precision,
                "channels_last": config.channels_last,
                "cache": config.data.cache,
                "artefact_probability": config.augmentation.artefact_probability,
                "batch_size": config.batch_size,
                "train_images": int(counts.get("train", 0)),
                "val_images": int(counts.get("val", 0)),
                "epoch_seconds": [round(s, 1) for s in metrics["train_seconds"]],
                "train_images_per_s": [round(v, 1) for v in metrics["train_images_per_s"]],
            }
            print(name, results[name])

    payload = {"command": command(), "machine": machine(), "data": str(args.data),
               "subset_images": images, "per_class": args.per_class, "epochs": args.epochs,
               "results": results}
    path = write_results("train_throughput", payload)
    update_section("train_throughput", "Training throughput", _table(payload))
    print(f"wrote {path}")


def _table(payload: dict) -> str:
    results = payload["results"]
    baseline = next((r for r in results.values() if r["variant"] == BASELINE), None)
    rows = [
        f"| {n} | {r['precision']} | {'last' if r['channels_last'] else 'first'} "
        f"| {r['train_size']} | {r['cache']} | {r['loader_workers']} | {r['batch_size']} "
        f"| {r['train_images']} "
        f"| {r['epoch_seconds'][0]} | {r['epoch_seconds'][-1]} "
        f"| {r['train_images_per_s'][0]} | {r['train_images_per_s'][-1]} "
        f"| {_relative(r, baseline)} |"
        for n, r in results.items()
    ]
    m = payload["machine"]
    return (
        f"Command: `{payload['command']}`  \n"
        f"Machine: {m['cpu_cores']} CPU cores, torch {m['torch']} ({m['torch_threads']} threads), "
        f"GPU: {m['gpu'] or 'none'}. Subset: "
        f"{payload['subset_images']} images of {payload['data']} ({payload['per_class']} per "
        f"class), {payload['epochs']} epochs, disk cache empty at the start. Epoch time "
        "covers the training pass only (validation excluded); the first epoch decodes and "
        "resizes every JPEG, later epochs read the cache (except with no cache). Each "
        "efficientnet_lite0 row after the first changes one lever of it; the last column is its "
        "last-epoch images/s against that first efficientnet_lite0 row's. The 160 px row trains "
        "every epoch at the size of progressive resizing's low-resolution epochs (images are "
        "still loaded and augmented at 224 px).\n\n"
        "| variant | precision | channels | train px | cache | loader workers | batch "
        "| train images | first epoch s | last epoch s | first epoch img/s | last epoch img/s "
        "| x efficientnet_lite0 |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|\n"
        + "\n".join(rows)
    )


def _relative(result: dict, baseline: dict | None) -> str:
    if baseline is None or result["variant"] == "cnn":
        return ""
    return f"{result['train_images_per_s'][-1] / baseline['train_images_per_s'][-1]:.2f}"


if __name__ == "__main__":
    main()
