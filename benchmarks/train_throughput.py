"""Training throughput: images/s for both models at their default sizes on this machine.

Builds a class-folder subset of a dataset (symlinks, N images per class), then trains each
model for a few epochs with an empty disk cache, so the first epoch decodes and resizes every
JPEG and later epochs only augment cached arrays. Reports per-epoch wall time and training
images/s from the run's own metrics.csv.

    python benchmarks/train_throughput.py --data ../shared/data/isic9/Train --per-class 60
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
# (name, config, extra overrides): both models as configured, plus Lite0 without a loader
# worker process and without channels-last, to check those defaults.
VARIANTS = (
    ("assignment_cnn", ROOT / "configs/assignment_cnn_notebook.yaml", {}),
    ("efficientnet_lite0", ROOT / "configs/efficientnet_lite0.yaml", {}),
    ("efficientnet_lite0, no loader worker", ROOT / "configs/efficientnet_lite0.yaml",
     {"data.num_workers": 0}),
    ("efficientnet_lite0, channels-first", ROOT / "configs/efficientnet_lite0.yaml",
     {"channels_last": False}),
)


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
    args = parser.parse_args()

    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        images = subset(args.data, args.per_class, data)
        for index, (name, config_path, extra) in enumerate(VARIANTS):
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
                "loader_workers": config.data.num_workers
                if config.data.num_workers is not None else default_num_workers(),
                "image_size": config.model.image_size,
                "batch_size": config.batch_size,
                "train_images": int(counts.get("train", 0)),
                "val_images": int(counts.get("val", 0)),
                "epoch_seconds": [round(s, 1) for s in metrics["train_seconds"]],
                "train_images_per_s": [round(v, 1) for v in metrics["train_images_per_s"]],
            }
            print(name, results[name])

    payload = {"command": command(), "machine": machine(), "data": str(args.data),
               "subset_images": images, "results": results}
    path = write_results("train_throughput", payload)
    rows = [
        f"| {n} | {r['image_size']} | {r['batch_size']} | {r['loader_workers']} "
        f"| {r['train_images']} "
        f"| {r['epoch_seconds'][0]} | {r['epoch_seconds'][-1]} "
        f"| {r['train_images_per_s'][0]} | {r['train_images_per_s'][-1]} |"
        for n, r in results.items()
    ]
    m = payload["machine"]
    body = (
        f"Command: `{payload['command']}`  \n"
        f"Machine: {m['cpu_cores']} CPU cores, torch {m['torch']} ({m['torch_threads']} threads), "
        f"GPU: {m['gpu'] or 'none'}. Subset: "
        f"{images} images of {payload['data']} ({args.per_class} per class), "
        f"{args.epochs} epochs, disk cache empty at the start. Epoch time covers the training "
        "pass only (validation excluded); the first epoch decodes and resizes every JPEG, "
        "later epochs read the cache.\n\n"
        "| model | input px | batch | loader workers | train images | first epoch s "
        "| last epoch s | first epoch img/s | last epoch img/s |\n"
        "|---|---|---|---|---|---|---|---|---|\n"
        + "\n".join(rows)
    )
    update_section("train_throughput", "Training throughput", body)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
