"""Pieces of the training loop that have exact answers."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F

from melanoscan.training.module import balanced_accuracy, warmup_cosine, weighted_cross_entropy


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
