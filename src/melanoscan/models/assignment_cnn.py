"""The small Keras CNN of the classic melanoma-detection student notebook, in PyTorch.

Keras original (180x180 RGB, 9 classes)::

    Sequential([
        Rescaling(1.0 / 255, input_shape=(180, 180, 3)),
        Conv2D(16, 3, padding="same", activation="relu"), MaxPooling2D(),
        Conv2D(32, 3, padding="same", activation="relu"), MaxPooling2D(),
        Conv2D(64, 3, padding="same", activation="relu"), MaxPooling2D(),
        Flatten(),
        Dense(128, activation="relu"),
        Dense(num_classes),
    ])

which Keras reports as 3,989,801 parameters.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from melanoscan.models.interface import ImageClassifier

__all__ = ["AssignmentCNN", "Rescaling"]


class Rescaling(nn.Module):
    """Keras ``Rescaling``: ``x * scale + offset``.

    Args:
        scale: multiplier.
        offset: added after scaling.
    """

    def __init__(self, scale: float, offset: float = 0.0) -> None:
        super().__init__()
        self.scale = scale
        self.offset = offset

    def forward(self, x: Tensor) -> Tensor:
        return x * self.scale + self.offset

    def extra_repr(self) -> str:
        return f"scale={self.scale}, offset={self.offset}"


class AssignmentCNN(ImageClassifier):
    """Three Conv-ReLU-MaxPool blocks (16, 32, 64 filters), then Dense 128 and the classifier.

    The model takes float RGB images with pixel values in ``0..255`` (not normalised): a
    :class:`Rescaling` layer inside divides them by 255, as in the Keras notebook.

    The notebook's improved variants are options: ``batch_norm`` adds ``BatchNorm2d`` after each
    Conv2D+ReLU (Keras order ``Conv2D(activation="relu")`` then ``BatchNormalization()``), and
    ``dropout`` adds ``Dropout`` in front of each dense layer. Flatten runs in PyTorch's
    channel-first order, so Keras weights would need their dense kernel permuted.

    Args:
        num_classes: number of output logits.
        input_size: ``(height, width)`` or one side of a square input; the flatten size follows
            it (each of the three 2x2 poolings floors odd sizes, as Keras does).
        batch_norm: add batch normalisation after every convolution.
        dropout: dropout rate in front of the dense layers; 0 disables it.
        in_channels: number of input channels.

    Attributes:
        gate_layers: names of the submodules whose pooled outputs the dermoscopy gate reads.
    """

    gate_layers: tuple[str, ...] = ("convs.0", "convs.1", "convs.2")
    filters: tuple[int, ...] = (16, 32, 64)
    hidden_units: int = 128

    def __init__(
        self,
        num_classes: int = 9,
        input_size: int | Sequence[int] = 180,
        batch_norm: bool = False,
        dropout: float = 0.0,
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        height, width = (input_size, input_size) if isinstance(input_size, int) else input_size
        self.input_size = (height, width)
        self.num_classes = num_classes
        self.rescale = Rescaling(1.0 / 255.0)

        blocks: list[nn.Module] = []
        channels = in_channels
        for filters in self.filters:
            layers: list[nn.Module] = [
                nn.Conv2d(channels, filters, kernel_size=3, padding=1),
                nn.ReLU(inplace=True),
            ]
            if batch_norm:
                # Keras BatchNormalization defaults: momentum 0.99, epsilon 1e-3.
                layers.append(nn.BatchNorm2d(filters, eps=1e-3, momentum=0.01))
            layers.append(nn.MaxPool2d(2))
            blocks.append(nn.Sequential(*layers))
            channels = filters
            height, width = height // 2, width // 2
        if height < 1 or width < 1:
            raise ValueError(f"input_size {self.input_size} is too small for three 2x2 poolings")
        self.convs = nn.Sequential(*blocks)

        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Dropout(dropout),
            nn.Linear(channels * height * width, self.hidden_units),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(self.hidden_units, num_classes),
        )

    def forward_features(self, x: Tensor) -> Tensor:
        """The last conv block's output ``(N, 64, H // 8, W // 8)`` of images in ``0..255``."""
        features: Tensor = self.convs(self.rescale(x))
        return features

    def forward_head(self, features: Tensor) -> Tensor:
        """Logits ``(N, num_classes)`` from the output of :meth:`forward_features`.

        Args:
            features: the last conv block's output.
        """
        logits: Tensor = self.classifier(features)
        return logits
