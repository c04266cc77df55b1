"""The training module: exact pieces, progressive resizing, the melanoma AUC, bf16."""

from __future__ import annotations

import itertools
import math
import warnings

import lightning as L
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from melanoscan.training.config import OptimConfig
from melanoscan.training.module import (
    LesionClassifier,
    balanced_accuracy,
    warmup_cosine,
    weighted_cross_entropy,
)


def test_balanced_accuracy_ignores_absent_classes() -> None:
    # class 0: 3/4 right, class 1: 1/2 right, class 2: no images.
    confusion = torch.tensor([[3, 1, 0], [1, 1, 0], [0, 0, 0]])
    assert balanced_accuracy(confusion) == pytest.approx((0.75 + 0.5) / 2)
    assert balanced_accuracy(torch.zeros(3, 3)) != balanced_accuracy(torch.zeros(3, 3))  # nan


def test_warmup_then_cosine() -> None:
    values = [warmup_cosine(s, warmup_steps=4, total_steps=14, min_ratio=0.1) for s in range(15)]
    assert values[:4] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert values[4] == pytest.approx(1.0)
    assert values[9] == pytest.approx(0.1 + 0.9 * 0.5)
    assert values[14] == pytest.approx(0.1)
    assert all(a >= b for a, b in itertools.pairwise(values[4:]))
    assert warmup_cosine(100, 4, 14, 0.1) == pytest.approx(0.1)


def test_weighted_cross_entropy() -> None:
    torch.manual_seed(0)
    logits, labels = torch.randn(6, 3), torch.tensor([0, 1, 2, 1, 1, 0])
    weights = torch.tensor([10.0, 1.0, 2.0])
    expected = F.cross_entropy(logits, labels, label_smoothing=0.1)
    assert weighted_cross_entropy(logits, labels, None, 0.1) == pytest.approx(float(expected))
    # Without smoothing it is torch's weighted mean.
    expected = F.cross_entropy(logits, labels, weight=weights)
    assert weighted_cross_entropy(logits, labels, weights, 0.0) == pytest.approx(float(expected))
    # With smoothing, an image of a light class is not pulled towards the heavy class.
    uniform = torch.zeros(1, 3, requires_grad=True)
    weighted_cross_entropy(uniform, torch.tensor([1]), weights, 0.3).backward()
    assert uniform.grad[0, 1] < 0 < uniform.grad[0, 0]
    assert uniform.grad[0, 0] == pytest.approx(float(uniform.grad[0, 2]))


class _ShapeRecorder(nn.Module):
    """A fully convolutional 3-class net that records the side and dtype of what it sees."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.head = nn.Linear(4, 3)
        self.seen: list[tuple[bool, int, torch.dtype]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.conv(x)
        self.seen.append((self.training, x.shape[-1], features.dtype))
        return self.head(features.mean(dim=(2, 3)))


def _loader(labels: list[int], side: int, seed: int) -> DataLoader:
    generator = torch.Generator().manual_seed(seed)
    n = len(labels)
    images = torch.rand(n, 3, side, side, generator=generator)
    ok = torch.ones(n, dtype=torch.bool)
    return DataLoader(TensorDataset(images, torch.tensor(labels), torch.arange(n), ok),
                      batch_size=4)


def _fit(
    val_labels: list[int], *, precision: str = "32-true", melanoma_index: int | None = 0,
    low_res_epochs: int = 1,
) -> tuple[LesionClassifier, _ShapeRecorder, L.Trainer, DataLoader]:
    torch.manual_seed(0)
    net = _ShapeRecorder()
    module = LesionClassifier(net, 3, OptimConfig(warmup_epochs=0), melanoma_index=melanoma_index,
                              low_res_epochs=low_res_epochs, low_res_size=8)
    trainer = L.Trainer(
        max_epochs=2, accelerator="cpu", devices=1, precision=precision, logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    val = _loader(val_labels, 16, seed=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Lightning's notes on few workers and few batches
        trainer.fit(module, _loader([0, 1, 2, 0, 1, 2, 0, 1], 16, seed=0), val)
    return module, net, trainer, val


def test_low_res_epochs_feed_smaller_training_batches_only() -> None:
    _, net, _, _ = _fit([0, 1, 2, 0, 1, 2])
    train_sides = [side for training, side, _ in net.seen if training]
    assert train_sides == [8, 8, 16, 16]  # 2 batches per epoch: epoch 0 at 8 px, then full size
    assert {side for training, side, _ in net.seen if not training} == {16}


def test_no_low_res_epochs_keep_full_size() -> None:
    _, net, _, _ = _fit([0, 1, 2, 0, 1, 2], low_res_epochs=0)
    assert {side for _, side, _ in net.seen} == {16}


def test_val_melanoma_auc_is_the_auc_of_the_melanoma_probability() -> None:
    val_labels = [0, 1, 2, 0, 1, 2, 0, 1]
    module, _, trainer, val = _fit(val_labels)
    logged = float(trainer.callback_metrics["val_melanoma_auc"])
    module.eval()
    with torch.no_grad():
        scores = torch.cat([module(images).softmax(dim=1)[:, 0] for images, *_ in val])
    expected = roc_auc_score(np.array(val_labels) == 0, scores.numpy())
    assert logged == pytest.approx(expected, abs=1e-6)


def test_val_melanoma_auc_is_nan_without_melanoma_in_validation() -> None:
    _, _, trainer, _ = _fit([1, 2, 1, 2, 1, 2])
    assert math.isnan(float(trainer.callback_metrics["val_melanoma_auc"]))
    assert not math.isnan(float(trainer.callback_metrics["val_balanced_accuracy"]))


def test_val_melanoma_auc_is_not_logged_without_a_melanoma_index() -> None:
    _, _, trainer, _ = _fit([0, 1, 2, 0], melanoma_index=None)
    assert "val_melanoma_auc" not in trainer.callback_metrics


def test_bf16_mixed_runs_convolutions_in_bfloat16_on_cpu() -> None:
    _, net, trainer, _ = _fit([0, 1, 2, 0, 1, 2], precision="bf16-mixed")
    assert {dtype for _, _, dtype in net.seen} == {torch.bfloat16}
    assert 0.0 <= float(trainer.callback_metrics["val_melanoma_auc"]) <= 1.0
