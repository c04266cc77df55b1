"""AssignmentCNN: shapes and the Keras notebook's parameter count."""

from __future__ import annotations

import pytest
import torch

from melanoscan.models import AssignmentCNN

# Keras: convs (3*3*3+1)*16 + (3*3*16+1)*32 + (3*3*32+1)*64 = 448 + 4640 + 18496,
# Flatten 22*22*64 = 30976 -> Dense 128: 30976*128 + 128 = 3965056, Dense 9: 128*9 + 9 = 1161.
KERAS_PARAMS_9_CLASSES = 448 + 4640 + 18496 + 3965056 + 1161


def _count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_default_parameter_count_matches_keras() -> None:
    assert _count(AssignmentCNN(num_classes=9)) == KERAS_PARAMS_9_CLASSES == 3_989_801


def test_batch_norm_adds_keras_trainable_parameters() -> None:
    # Keras counts gamma and beta as trainable, 2 * (16 + 32 + 64) = 224.
    assert _count(AssignmentCNN(num_classes=9, batch_norm=True)) == 3_989_801 + 224


@pytest.mark.parametrize("input_size", [180, (100, 132)])
@pytest.mark.parametrize(("batch_norm", "dropout"), [(False, 0.0), (True, 0.5)])
def test_output_shapes(input_size: int | tuple[int, int], batch_norm: bool, dropout: float) -> None:
    torch.manual_seed(0)
    model = AssignmentCNN(
        num_classes=9, input_size=input_size, batch_norm=batch_norm, dropout=dropout
    )
    h, w = (input_size, input_size) if isinstance(input_size, int) else input_size
    x = torch.rand(2, 3, h, w) * 255.0

    model.train()
    logits = model(x)
    logits.sum().backward()
    model.eval()
    with torch.no_grad():
        assert model(x).shape == (2, 9)
        assert model.forward_features(x).shape == (2, 64, h // 8, w // 8)
    assert logits.shape == (2, 9)


def test_rescaling_is_inside_the_model() -> None:
    model = AssignmentCNN(num_classes=3, input_size=16).eval()
    x = torch.full((1, 3, 16, 16), 255.0)
    assert torch.equal(model.rescale(x), torch.ones_like(x))


def test_too_small_input_is_rejected() -> None:
    with pytest.raises(ValueError, match="too small"):
        AssignmentCNN(input_size=7)
