"""The interface every registered network implements: features, then a classifier head."""

from __future__ import annotations

from abc import ABCMeta, abstractmethod

from torch import Tensor, nn

__all__ = ["ImageClassifier"]


class ImageClassifier(nn.Module, metaclass=ABCMeta):
    """A network split in two, as in timm: ``forward = forward_head(forward_features(x))``.

    Attributes:
        num_classes: number of output logits.
        gate_layers: names of the submodules whose pooled outputs the dermoscopy gate reads
            (:class:`melanoscan.models.features.LogitsAndFeatures`).
    """

    num_classes: int
    gate_layers: tuple[str, ...]

    @abstractmethod
    def forward_features(self, x: Tensor) -> Tensor:
        """The last conv feature map ``(N, C, h, w)`` of input images ``(N, 3, H, W)``."""

    @abstractmethod
    def forward_head(self, features: Tensor) -> Tensor:
        """Logits ``(N, num_classes)`` from the output of :meth:`forward_features`.

        Args:
            features: the last conv feature map.
        """

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``(N, num_classes)`` of input images ``(N, 3, H, W)``."""
        return self.forward_head(self.forward_features(x))
