"""Callbacks that keep a run's record: per-epoch metrics CSV, curves, throughput."""

from __future__ import annotations

import time
from pathlib import Path

import lightning as L
import pandas as pd

from melanoscan.training.plots import plot_training_curves

__all__ = ["EPOCH_COLUMNS", "EpochRecorder"]

EPOCH_COLUMNS = (
    "epoch",
    "train_loss",
    "train_accuracy",
    "val_loss",
    "val_accuracy",
    "val_balanced_accuracy",
    "val_melanoma_auc",
    "lr",
    "train_images_per_s",
    "train_seconds",
    "epoch_seconds",
)


class EpochRecorder(L.Callback):
    """Writes one row per epoch to ``metrics.csv`` and redraws ``training_curves.png``.

    Rows survive an interruption; on resume, rows of epochs that will be re-run are dropped.

    Args:
        run_dir: the run directory.
    """

    def __init__(self, run_dir: Path) -> None:
        self.csv_path = run_dir / "metrics.csv"
        self.plot_path = run_dir / "training_curves.png"
        self._epoch_start = 0.0
        self._train_end: float | None = None
        self._rows: list[dict[str, float]] = []

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.csv_path.exists() and trainer.ckpt_path:
            self._rows = pd.read_csv(self.csv_path).to_dict("records")

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._epoch_start = time.perf_counter()
        self._train_end = None

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._train_end = time.perf_counter()  # validation runs at the end of the epoch

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        now = time.perf_counter()
        seconds = now - self._epoch_start
        train_seconds = (self._train_end or now) - self._epoch_start
        seen = getattr(pl_module, "train_seen", 0) * trainer.world_size
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
        row = {
            "epoch": trainer.current_epoch,
            "train_loss": metrics.get("train_loss_epoch", float("nan")),
            "train_accuracy": metrics.get("train_accuracy", float("nan")),
            "val_loss": metrics.get("val_loss", float("nan")),
            "val_accuracy": metrics.get("val_accuracy", float("nan")),
            "val_balanced_accuracy": metrics.get("val_balanced_accuracy", float("nan")),
            "val_melanoma_auc": metrics.get("val_melanoma_auc", float("nan")),
            "lr": trainer.optimizers[0].param_groups[0]["lr"] if trainer.optimizers else 0.0,
            "train_images_per_s": seen / train_seconds if train_seconds > 0 else float("nan"),
            "train_seconds": train_seconds,
            "epoch_seconds": seconds,
        }
        pl_module.log("train_images_per_s", row["train_images_per_s"], prog_bar=True,
                      sync_dist=True)
        if not trainer.is_global_zero:
            return
        # After a resume, epochs that are being re-run replace their earlier rows.
        self._rows = [r for r in self._rows if r["epoch"] < trainer.current_epoch] + [row]
        table = pd.DataFrame(self._rows, columns=list(EPOCH_COLUMNS))
        table.to_csv(self.csv_path, index=False)
        plot_training_curves(table, self.plot_path)
