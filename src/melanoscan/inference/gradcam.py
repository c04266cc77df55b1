"""Grad-CAM heatmaps: which part of the image drove a class score (Selvaraju et al., 2017).

The heatmap weights each channel of the model's last conv feature map by the spatial mean of
the target logit's gradient, keeps the positive evidence (ReLU), and is upsampled to the input.
That feature map is the output of the submodule its model spec names
(:attr:`melanoscan.models.ModelSpec.feature_layer`).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor, nn

from melanoscan.bundle import Bundle
from melanoscan.calibration import softmax
from melanoscan.models.factory import feature_layer_of, get_model_spec

__all__ = ["Explanation", "explain", "grad_cam", "overlay"]

COLORMAP = "jet"


@dataclass
class Explanation:
    """Grad-CAM of one image for one class.

    Args:
        target_class: the class explained.
        probability: its calibrated probability.
        heatmap: Grad-CAM map ``(S, S)`` in ``[0, 1]``, ``float32``.
        overlay: the heatmap blended over the resized image the model saw, ``uint8 (S, S, 3)``.
    """

    target_class: str
    probability: float
    heatmap: np.ndarray
    overlay: np.ndarray

    def save(self, path: Path) -> Path:
        """Write the overlay as a PNG (parent directories created) and return ``path``.

        Args:
            path: destination file.
        """
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(self.overlay).save(path, format="PNG")
        return path


def grad_cam(
    model: nn.Module, inputs: Tensor, target: int, layer: str | None = None
) -> np.ndarray:
    """Grad-CAM heatmap of ``target`` for one preprocessed image.

    The model's train/eval modes, ``requires_grad`` flags and parameter gradients are left as
    they were, and no hook stays registered; works inside ``torch.no_grad`` and
    ``torch.inference_mode``.

    Args:
        model: the network; it runs in eval mode for the duration of the call.
        inputs: one preprocessed image, ``(1, 3, H, W)``.
        target: index of the class logit to explain.
        layer: name of the conv submodule to explain (default: the ``feature_layer`` of the
            model's registered spec).

    Returns:
        ``float32`` map ``(H, W)`` in ``[0, 1]`` (all zeros when there is no positive evidence).

    Raises:
        ValueError: ``inputs`` is not one image, ``target`` is not a valid class index, or
            no ``layer`` is given and the model's class is not registered.
    """
    cam, _ = _cam_and_logits(model, inputs, target, layer or feature_layer_of(model))
    return cam


def overlay(pixels: np.ndarray, heatmap: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """Blend a colour-mapped heatmap over an RGB image.

    Args:
        pixels: ``uint8`` image ``(H, W, 3)``.
        heatmap: map in ``[0, 1]``; resized bilinearly to ``(H, W)`` if its shape differs.
        alpha: weight of the heatmap colours, ``0`` (image only) to ``1`` (heatmap only).

    Returns:
        ``uint8`` image ``(H, W, 3)``.
    """
    if pixels.dtype != np.uint8 or pixels.ndim != 3 or pixels.shape[2] != 3:
        raise ValueError(f"pixels must be uint8 (H, W, 3), got {pixels.dtype} {pixels.shape}")
    if heatmap.ndim != 2:
        raise ValueError(f"heatmap must be 2-D, got shape {heatmap.shape}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    height, width = pixels.shape[:2]
    heat = np.asarray(heatmap, dtype=np.float32)
    if heat.shape != (height, width):
        heat = np.asarray(Image.fromarray(heat).resize((width, height), Image.Resampling.BILINEAR))
    heat = np.clip(np.nan_to_num(heat), 0.0, 1.0)
    from matplotlib import colormaps  # here, so that prediction and serving never load it

    colours = colormaps[COLORMAP](heat)[..., :3] * 255.0
    blended = (1.0 - alpha) * pixels.astype(np.float64) + alpha * colours
    return np.clip(np.rint(blended), 0, 255).astype(np.uint8)


def explain(bundle: Bundle, image: Image.Image, target: str | None = None) -> Explanation:
    """Grad-CAM of a bundle's model on one image, preprocessed as for prediction.

    Args:
        bundle: the loaded bundle.
        image: the RGB image.
        target: class to explain; ``None`` explains the predicted class.

    Raises:
        ValueError: ``target`` is not one of ``bundle.classes``.
    """
    classes = bundle.classes
    if target is not None and target not in classes:
        raise ValueError(f"unknown class {target!r}; known: {', '.join(classes)}")
    pixels = bundle.preprocessing.resize(image)
    inputs = torch.from_numpy(bundle.preprocessing.normalise(pixels)).unsqueeze(0)
    index = None if target is None else classes.index(target)
    layer = get_model_spec(bundle.metadata.architecture["name"]).feature_layer
    heatmap, logits = _cam_and_logits(bundle.model, inputs, index, layer)
    if index is None:
        index = int(logits.argmax())
    probabilities = softmax(logits[None], bundle.temperature)[0]
    return Explanation(
        target_class=classes[index],
        probability=float(probabilities[index]),
        heatmap=heatmap,
        overlay=overlay(pixels, heatmap),
    )


def _cam_and_logits(
    model: nn.Module, inputs: Tensor, target: int | None, layer: str
) -> tuple[np.ndarray, np.ndarray]:
    """Grad-CAM map ``(H, W)`` and the logits ``(classes,)``; ``target=None`` takes the argmax."""
    if inputs.ndim != 4 or inputs.shape[0] != 1:
        raise ValueError(f"inputs must be one image (1, C, H, W), got shape {tuple(inputs.shape)}")
    module = model.get_submodule(layer)
    captured: list[Tensor] = []

    def keep_output(_module: nn.Module, _args: object, output: Tensor) -> None:
        captured.append(output)

    parameter = next(model.parameters(), None)
    device = inputs.device if parameter is None else parameter.device
    handle = module.register_forward_hook(keep_output)
    # inference_mode(False) lets us clone inference tensors into ones autograd can track; the
    # input requires grad so the graph exists even when every parameter is frozen.
    try:
        with _eval_mode(model), torch.inference_mode(False), torch.enable_grad():
            x = inputs.detach().clone().to(device).requires_grad_(True)
            logits = model(x)[0]
            if target is None:
                target = int(logits.argmax())
            if not 0 <= target < logits.shape[0]:
                raise ValueError(f"target must be in [0, {logits.shape[0]}), got {target}")
            if not captured:
                raise RuntimeError(f"layer {layer!r} did not run")
            features = captured[-1]
            # autograd.grad, not backward(): parameters' .grad must stay untouched.
            (gradients,) = torch.autograd.grad(logits[target], features, allow_unused=True)
    finally:
        handle.remove()
    features = features.detach()
    if gradients is None:
        gradients = torch.zeros_like(features)
    weights = gradients.mean(dim=(2, 3), keepdim=True)
    cam = F.relu((weights * features).sum(dim=1, keepdim=True)).float()
    cam = F.interpolate(cam, size=inputs.shape[-2:], mode="bilinear", align_corners=False)[0, 0]
    peak = cam.max()
    cam = cam / peak if peak > 0 else torch.zeros_like(cam)
    heatmap = cam.clamp(0.0, 1.0).cpu().numpy().astype(np.float32)
    return heatmap, logits.detach().float().cpu().numpy()


@contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    """Run ``model`` in eval mode, then restore every submodule's own mode."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for m, training in modes:
            m.training = training
