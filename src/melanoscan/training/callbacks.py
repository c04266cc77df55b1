"""Callbacks that keep a run's record: per-epoch metrics CSV, curves, throughput, and the
images that could not be read mid-run."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import pandas as pd
from lightning.pytorch.callbacks import EMAWeightAveraging

from melanoscan.bundle import atomic_write
from melanoscan.data.dataset import LesionDataset
from melanoscan.data.images import ImageDecodeError
from melanoscan.training.plots import plot_training_curves

__all__ = ["EPOCH_COLUMNS", "EpochRecorder", "UnreadableImages", "WeightAverage"]

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
        atomic_write(self.csv_path, lambda tmp: table.to_csv(tmp, index=False))
        plot_training_curves(table, self.plot_path)


class UnreadableImages(L.Callback):
    """Collects the images that could not be read mid-run and reports each one once.

    Batches flag such images ``ok=False`` (the model leaves them out); a damaged file comes back
    in every epoch, from every loader worker, so it is reported only the first time. The list
    is kept in checkpoints, so a resumed run does not report it again.

    Args:
        report: called with one line per newly unreadable image.
    """

    def __init__(self, report: Callable[[str], None]) -> None:
        self.report = report
        self.paths: set[str] = set()

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule,
                           outputs: Any, batch: Any, batch_idx: int) -> None:
        self._record(batch, trainer.datamodule.train_set)  # type: ignore[attr-defined]

    def on_validation_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule,
                                outputs: Any, batch: Any, batch_idx: int,
                                dataloader_idx: int = 0) -> None:
        self._record(batch, trainer.datamodule.val_set)  # type: ignore[attr-defined]

    def _record(self, batch: Any, dataset: LesionDataset) -> None:
        _, _, indices, ok = batch
        if bool(ok.all()):
            return
        for index in indices[~ok].tolist():
            path = str(dataset.paths[index])
            if path not in self.paths:
                self.paths.add(path)
                self.report(f"skipping unreadable image {path}: {_reason(dataset, index)}; "
                            "it is left out of every batch from now on")

    def state_dict(self) -> dict[str, Any]:
        return {"paths": sorted(self.paths)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.paths.update(state_dict.get("paths", []))


def _reason(dataset: LesionDataset, index: int) -> str:
    """Why the image cannot be read (loaded again once, here: workers only flag it)."""
    try:
        dataset.loader.load(str(dataset.paths[index]), str(dataset.content_hashes[index]) or None)
    except ImageDecodeError as exc:
        return exc.reason
    return "it failed to load during the run"


class WeightAverage(EMAWeightAveraging):
    """An exponential moving average of the weights, updated every step from ``start_epoch``.

    Lightning's callback, given a start epoch, still updates the average from the first step
    and validates and checkpoints it from the first epoch. This one starts the average at the
    start epoch (its first update copies the weights of that moment) and until then leaves
    validation and checkpoints to the training weights, so no epoch is scored or selected for
    weights it never had.

    Args:
        decay: the average's decay per optimiser step.
        start_epoch: the first epoch whose steps update the average.
    """

    def __init__(self, decay: float, start_epoch: int) -> None:
        super().__init__(decay=decay)
        self.start_epoch = start_epoch

    @property
    def started(self) -> bool:
        average = self._average_model
        return average is not None and int(average.n_averaged.item()) > 0

    def should_update(self, step_idx: int | None = None, epoch_idx: int | None = None) -> bool:
        return step_idx is not None  # every step; on_train_batch_end holds back early epochs

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
        batch_idx: int,
    ) -> None:
        if trainer.current_epoch >= self.start_epoch:
            super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.started:
            super().on_validation_epoch_start(trainer, pl_module)

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.started:
            super().on_validation_epoch_end(trainer, pl_module)

    def on_save_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        if self.started:
            super().on_save_checkpoint(trainer, pl_module, checkpoint)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.started:
            super().on_train_end(trainer, pl_module)
