"""Logits and the dermoscopy gate's features in one forward pass."""

from __future__ import annotations

from torch import Tensor, nn

from melanoscan.models.interface import ImageClassifier

__all__ = ["LogitsAndFeatures"]


class LogitsAndFeatures(nn.Module):
    """Wrap a registered model to return ``(logits, gate features)``.

    The gate features are the spatial means of the outputs of the model's ``gate_layers`` (for
    EfficientNet-Lite the last block of each of its 7 stages, 784 values for lite0; for the
    assignment CNN its 3 conv blocks, 112 values), concatenated. Early stages describe colour and
    fine texture, late ones lesion structure: together they tell a dermoscopy image from a
    photo, a document or a scan far better than the classifier's own last layer, which was
    trained only to tell lesions apart. The logits are exactly those of ``model(x)``.

    Args:
        model: the network; its ``gate_layers`` name the submodules read.
    """

    def __init__(self, model: ImageClassifier) -> None:
        super().__init__()
        self.model = model
        names: list[str] = model.gate_layers  # type: ignore[assignment]  # a plain attribute
        self.layers = [model.get_submodule(name) for name in names]
        # Take the model's mode: the ONNX export restores the wrapper's mode afterwards, and a
        # new module's default (training) would leave the model training.
        self.train(model.training)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        import torch

        captured: list[Tensor] = []
        handles = [layer.register_forward_hook(lambda _m, _i, out: captured.append(out))
                   for layer in self.layers]
        try:
            logits: Tensor = self.model(x)
        finally:
            for handle in handles:
                handle.remove()
        return logits, torch.cat([out.mean(dim=(2, 3)) for out in captured], dim=1)

