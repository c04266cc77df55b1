"""The LightningModule: loss, metrics, optimiser and schedule around any factory model."""

from __future__ import annotations

import math

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics.classification import BinaryAUROC, MulticlassConfusionMatrix

from melanoscan.evaluation.metrics import confusion_balanced_accuracy
from melanoscan.training.config import OptimConfig

__all__ = ["LesionClassifier", "balanced_accuracy", "warmup_cosine"]

Batch = tuple[Tensor, Tensor, Tensor, Tensor]


def balanced_accuracy(confusion: Tensor) -> float:
    """Mean recall over the classes present in the targets (rows of ``confusion``)."""
    return confusion_balanced_accuracy(confusion.detach().cpu().numpy())


def warmup_cosine(step: int, warmup_steps: int, total_steps: int, min_ratio: float) -> float:
    """Learning-rate multiplier: linear warmup to 1, then cosine decay to ``min_ratio``."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    progress = min(1.0, max(0.0, progress))
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


class LesionClassifier(L.LightningModule):
    """Trains a classifier with cross-entropy and reports validation balanced accuracy.

    Batches are ``(images, labels, indices, ok)``; rows with ``ok`` false (an image that could
    not be read mid-epoch) are left out of the loss (the run's ``UnreadableImages`` callback
    records them).

    Args:
        model: the network, returning logits.
        num_classes: number of output classes.
        optim: optimiser and schedule settings.
        class_weights: cross-entropy class weights (``None``: unweighted).
        channels_last: keep weights and batches in the channels-last memory layout.
        melanoma_index: output index of melanoma, for ``val_melanoma_auc`` (``None``: not
            logged).
        low_res_epochs: the first this many epochs train on batches downscaled (antialiased)
            to ``low_res_size``; the network is fully convolutional, so only cost changes.
        low_res_size: input side of those epochs.
    """

    class_weights: Tensor | None  # a buffer (register_buffer), typed for the loss

    def __init__(
        self,
        model: nn.Module,
        num_classes: int,
        optim: OptimConfig,
        class_weights: Tensor | None = None,
        channels_last: bool = False,
        melanoma_index: int | None = None,
        low_res_epochs: int = 0,
        low_res_size: int = 160,
    ) -> None:
        super().__init__()
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        # Module.to takes memory_format (torch documents it); its typed overloads omit it.
        self.model = model.to(memory_format=self.memory_format)  # type: ignore[call-overload]
        self.num_classes = num_classes
        self.optim = optim
        self.register_buffer("class_weights", class_weights, persistent=False)
        self.val_confusion = MulticlassConfusionMatrix(num_classes)
        self.melanoma_index = melanoma_index
        self.val_melanoma_auc = BinaryAUROC()
        self.low_res_epochs = low_res_epochs
        self.low_res_size = low_res_size
        self.train_seen = 0  # images this process trained on in the current epoch

    def forward(self, images: Tensor) -> Tensor:
        return self.model(images.contiguous(memory_format=self.memory_format))

    def _loss(self, batch: Batch) -> tuple[Tensor, Tensor, Tensor] | None:
        images, labels, _, ok = batch
        if not bool(ok.all()):
            images, labels = images[ok], labels[ok]
        if len(labels) == 0:
            return None
        logits = self(images)
        return weighted_cross_entropy(logits, labels, self.class_weights,
                                      self.optim.label_smoothing), logits, labels

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor | None:
        images = batch[0]
        if self.current_epoch < self.low_res_epochs and images.shape[-1] > self.low_res_size:
            size = (self.low_res_size, self.low_res_size)
            images = F.interpolate(images, size=size, mode="bilinear", antialias=True,
                                   align_corners=False)
            batch = (images, *batch[1:])
        result = self._loss(batch)
        if result is None:
            return None  # every image of the batch was unreadable: skip the step
        loss, logits, labels = result
        self.train_seen += len(labels)
        accuracy = (logits.argmax(dim=1) == labels).float().mean()
        self.log("train_loss", loss, on_step=True, on_epoch=True, prog_bar=True,
                 batch_size=len(labels), sync_dist=True)
        self.log("train_accuracy", accuracy, on_step=False, on_epoch=True,
                 batch_size=len(labels), sync_dist=True)
        return loss

    def on_train_epoch_start(self) -> None:
        self.train_seen = 0

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        result = self._loss(batch)
        if result is None:
            return
        loss, logits, labels = result
        self.val_confusion.update(logits.argmax(dim=1), labels)
        if self.melanoma_index is not None:
            scores = logits.float().softmax(dim=1)[:, self.melanoma_index]
            self.val_melanoma_auc.update(scores, (labels == self.melanoma_index).long())
        self.log("val_loss", loss, on_epoch=True, prog_bar=True, batch_size=len(labels),
                 sync_dist=True)

    def on_validation_epoch_end(self) -> None:
        confusion = self.val_confusion.compute()  # summed over all processes
        self.val_confusion.reset()
        total = confusion.sum()
        if total == 0:
            return
        # Equal on every process already; sync_dist only keeps Lightning from warning.
        self.log("val_accuracy", confusion.diagonal().sum().float() / total, sync_dist=True)
        self.log("val_balanced_accuracy", balanced_accuracy(confusion), prog_bar=True,
                 sync_dist=True)
        if self.melanoma_index is not None:
            support = confusion.sum(dim=1)[self.melanoma_index]
            # AUC needs melanoma and other images; NaN never counts as a best checkpoint.
            auc = self.val_melanoma_auc.compute() if 0 < support < total else float("nan")
            self.log("val_melanoma_auc", auc, prog_bar=True, sync_dist=True)
            self.val_melanoma_auc.reset()

    def configure_optimizers(self):
        optimizer_class = torch.optim.AdamW if self.optim.optimizer == "adamw" else torch.optim.Adam
        optimizer = optimizer_class(
            self.parameters(), lr=self.optim.lr, weight_decay=self.optim.weight_decay
        )
        total = max(1, int(self.trainer.estimated_stepping_batches))
        epochs = max(1, self.trainer.max_epochs or 1)
        warmup = round(self.optim.warmup_epochs * total / epochs)
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer,
            lambda step: warmup_cosine(step, warmup, total, self.optim.min_lr_ratio),
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}


def weighted_cross_entropy(
    logits: Tensor, labels: Tensor, class_weights: Tensor | None, label_smoothing: float
) -> Tensor:
    """Cross-entropy with label smoothing, each image weighted by its true class's weight.

    Not ``F.cross_entropy(weight=..., label_smoothing=...)``: torch weights the smoothing term
    of every class by that class's weight, which pulls every image towards the heavily
    weighted rare classes (a weighted-loss run with it stayed at validation accuracy
    0.27-0.41 for 4 epochs, against 0.69-0.74 for the sampler).
    """
    losses = F.cross_entropy(logits, labels, reduction="none", label_smoothing=label_smoothing)
    if class_weights is None:
        return losses.mean()
    weights = class_weights.to(losses.dtype)[labels]
    return (losses * weights).sum() / weights.sum().clamp_min(torch.finfo(losses.dtype).tiny)
