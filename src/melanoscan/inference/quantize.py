"""Static int8 quantisation of an exported ONNX model.

onnxruntime's own tooling does the work: :func:`quantize_int8` folds the exported padding
(:mod:`melanoscan.inference.onnx_graph`), runs ``quant_pre_process`` (shape inference, graph
optimisation), rounds the weights onto the int8 grid with preserved kernel sums and corrected
biases (:mod:`melanoscan.inference.weight_rounding`), then ``quantize_static`` in QDQ format
with per-channel int8 weights, calibrated on preprocessed training images
(:func:`melanoscan.inference.bundle_images.calibration_inputs`).
Dynamic quantisation is not offered: it quantises only MatMul/Gemm-like ops well and is known
to break the depthwise convolutions of EfficientNet-Lite.

A quantised model is only worth shipping if it decides like the fp32 one: the parity gate is in
:mod:`melanoscan.inference.parity`.
"""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from melanoscan.bundle import INT8_ONNX_FILE
from melanoscan.inference.onnx_graph import fold_static_padding
from melanoscan.inference.parity import input_batches
from melanoscan.inference.weight_rounding import prepare_weights

__all__ = [
    "EFFICIENTNET_FLOAT_PREFIX",
    "INT8_ONNX_FILE",
    "QuantizationError",
    "QuantizationSettings",
    "quantize_int8",
]

CALIBRATION_METHODS = ("minmax", "entropy", "percentile")
EFFICIENTNET_FLOAT_PREFIX = (
    "/model/stem/*",
    "/model/blocks/blocks.0/*",
    "/model/blocks/blocks.1/*",
    "/model/blocks/blocks.2/*",
)
"""What stays float by default: EfficientNet-Lite's stem and first three blocks (10 of its 49
convolutions, about a tenth of its multiply-adds, at 112 and 56 px).

Chosen by a sensitivity analysis on the shipped model's validation images (never its test
set; docs/INT8.md has the table): fully quantised, its int8 logits disagree
with fp32 on 1.9% of top-1 decisions, the noise of 8-bit weights and activations spread over
the whole network (no single layer, the head, the classifier's input or the residual adds kept
float fixes it); the early, high-resolution blocks with few channels are the most sensitive per
operation, and keeping the stem and blocks 0-2 float takes top-1 agreement to 99.0-99.1% and
alert agreement to 99.0-99.9% on two disjoint validation samples (mean logit change 0.062 ->
0.038). On the ISIC 2018 test set (checked once) that is 99.01% top-1 but 98.68% alert
agreement: the margin is thin and ``export --int8`` may refuse. Keeping depthwise convolutions
float between quantised ones is worse than useless: onnxruntime's graph optimisations then
break the model (mean logit change 0.77)."""
ACTIVATION_TYPES = ("uint8", "int8")


class QuantizationError(Exception):
    """Quantisation could not run or produced no quantised operator."""


@dataclass(frozen=True)
class QuantizationSettings:
    """How :func:`quantize_int8` quantises (weights are always int8, symmetric, per channel).

    The defaults were chosen with ``benchmarks/quantize_parity.py`` on the shipped
    EfficientNet-Lite0 (docs/BENCHMARKS.md).

    Args:
        activation_type: ``uint8`` (asymmetric, the u8s8 kernels of x86 VNNI) or ``int8``.
        calibration: ``minmax``, ``entropy`` or ``percentile`` activation ranges.
        percentile: the percentile kept by ``percentile`` calibration.
        fold_padding: fold the exported "SAME" padding into the convolutions first
            (:func:`melanoscan.inference.onnx_graph.fold_static_padding`).
        preprocess: run onnxruntime's ``quant_pre_process`` (shape inference, optimisation).
        float_input_conv: keep the convolution that reads the image in float (its weights are
            the most rounding-sensitive, but sum-preserving rounding fixes most of that, and a
            float stem costs about a fifth of the int8 throughput).
        preserve_kernel_sums: sum-preserving rounding of multi-tap kernels
            (:mod:`melanoscan.inference.weight_rounding`).
        bias_correction: fold the mean output shift of the weight rounding into the biases.
        reduce_range: 7-bit weights, for CPUs without VNNI whose u8s8 kernels can saturate.
        keep_float: ``fnmatch`` patterns of node names (of the exported graph, e.g.
            ``/model/head/conv/Conv``) that stay float: the mixed-precision exclusion list.
            Nodes writing a graph output always stay float. Default:
            :data:`EFFICIENTNET_FLOAT_PREFIX` (patterns that match no node, as in other
            architectures, leave everything quantised); ``()`` quantises everything.
    """

    activation_type: str = "uint8"
    calibration: str = "percentile"
    percentile: float = 99.999
    fold_padding: bool = True
    preprocess: bool = True
    float_input_conv: bool = False
    preserve_kernel_sums: bool = True
    bias_correction: bool = True
    reduce_range: bool = False
    keep_float: tuple[str, ...] = EFFICIENTNET_FLOAT_PREFIX

    def __post_init__(self) -> None:
        if self.activation_type not in ACTIVATION_TYPES:
            raise ValueError(f"activation_type must be one of {ACTIVATION_TYPES}")
        if self.calibration not in CALIBRATION_METHODS:
            raise ValueError(f"calibration must be one of {CALIBRATION_METHODS}")
        if not 0.0 < self.percentile <= 100.0:
            raise ValueError("percentile must be in (0, 100]")
        if isinstance(self.keep_float, str):
            raise ValueError("keep_float must be a sequence of node-name patterns, not a string")
        object.__setattr__(self, "keep_float", tuple(self.keep_float))

    def to_dict(self) -> dict[str, Any]:
        return {"format": "QDQ", "weight_type": "int8", "per_channel": True, **asdict(self)}


def quantize_int8(
    fp32_onnx: Path,
    output: Path,
    calibration_inputs: Iterable[np.ndarray] | np.ndarray,
    settings: QuantizationSettings | None = None,
    batch_size: int = 16,
    calibration_cache: Path | None = None,
) -> Path:
    """Write a statically quantised (QDQ, int8 weights) copy of an fp32 ONNX model.

    Every output of the model stays float (logits, and features where exported); every
    operator onnxruntime can quantise is quantised.

    Args:
        fp32_onnx: the exported fp32 model (one float input ``(N, 3, S, S)``).
        output: where the quantised model is written.
        calibration_inputs: preprocessed model inputs, one array ``(N, 3, S, S)`` or an iterable
            of single inputs ``(3, S, S)`` and/or batches; training images, a few hundred.
        settings: how to quantise (``None``: :class:`QuantizationSettings` defaults).
        batch_size: calibration batch size (memory grows with it, the ranges do not change).
        calibration_cache: a JSON file of activation ranges: read when it exists (the
            calibration is skipped), else written. For sweeps over what stays float; a cache
            belongs to one model, calibration method and set of calibration images.

    Returns:
        ``output``.

    Raises:
        QuantizationError: no calibration input, or nothing was quantised.
    """
    import onnx
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quant_pre_process,
        quantize_static,
    )

    settings = settings or QuantizationSettings()
    fp32_onnx, output = Path(fp32_onnx), Path(output)
    batches = list(input_batches(calibration_inputs, batch_size))
    if not batches:
        raise QuantizationError("no calibration input given")
    model = onnx.load(str(fp32_onnx), load_external_data=False)
    initializers = {t.name for t in model.graph.initializer}
    input_name = next(i.name for i in model.graph.input if i.name not in initializers)
    method = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
              "percentile": CalibrationMethod.Percentile}[settings.calibration]
    output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="melanoscan-quant-") as tmp:
        source = fp32_onnx
        if settings.fold_padding:
            source = fold_static_padding(source, Path(tmp) / "folded.onnx")
        if settings.preprocess:
            quant_pre_process(str(source), str(Path(tmp) / "preprocessed.onnx"))
            source = Path(tmp) / "preprocessed.onnx"
        graph_model = onnx.load(str(source))
        keep_float = _output_producers(graph_model)
        if settings.float_input_conv:
            keep_float += _input_convs(graph_model, input_name)
        keep_float += _matching_nodes(graph_model, settings.keep_float, exclude=keep_float)
        if settings.preserve_kernel_sums or settings.bias_correction:
            graph_model = prepare_weights(graph_model, batches, keep_float,
                                          settings.preserve_kernel_sums, settings.bias_correction)
            source = Path(tmp) / "prepared.onnx"
            onnx.save(graph_model, str(source))
        root = logging.getLogger()
        level = root.level
        root.setLevel(max(level, logging.ERROR))  # quantize_static logs advice at WARNING
        try:
            with contextlib.redirect_stdout(io.StringIO()):  # histogram calibration prints
                quantize_static(
                    str(source), str(output), _BatchReader(input_name, batches),
                    quant_format=QuantFormat.QDQ, per_channel=True,
                    reduce_range=settings.reduce_range, weight_type=QuantType.QInt8,
                    activation_type=(QuantType.QUInt8 if settings.activation_type == "uint8"
                                     else QuantType.QInt8),
                    calibrate_method=method, nodes_to_exclude=keep_float,
                    calibration_cache_path=calibration_cache,
                    extra_options={
                        "ActivationSymmetric": settings.activation_type == "int8",
                        "WeightSymmetric": True,
                        "CalibStridedMinMax": 1,  # one batch at a time: bounded memory
                        "CalibPercentile": settings.percentile,
                    },
                )
        finally:
            root.setLevel(level)
    quantised = onnx.load(str(output), load_external_data=False)
    if not any(node.op_type == "QuantizeLinear" for node in quantised.graph.node):
        output.unlink(missing_ok=True)
        raise QuantizationError(f"{fp32_onnx}: onnxruntime quantised no operator")
    return output


def _output_producers(model: Any) -> list[str]:
    """Names of the nodes that write a graph output: kept float, so every output stays exact
    float arithmetic on (dequantised) inputs rather than an 8-bit tensor."""
    outputs = {o.name for o in model.graph.output}
    return [n.name for n in model.graph.node if outputs.intersection(n.output)]


def _matching_nodes(model: Any, patterns: Sequence[str], exclude: Sequence[str]) -> list[str]:
    """Names of the nodes matching any ``fnmatch`` pattern, other than those in ``exclude``."""
    import fnmatch

    return [n.name for n in model.graph.node if n.name not in exclude
            and any(fnmatch.fnmatchcase(n.name, pattern) for pattern in patterns)]


def _input_convs(model: Any, input_name: str) -> list[str]:
    """Names of the convolutions that read the model input directly."""
    return [n.name for n in model.graph.node if n.op_type == "Conv" and n.input[0] == input_name]


class _BatchReader:
    """Calibration batches for ``quantize_static``, in ranges (``CalibStridedMinMax``)."""

    def __init__(self, input_name: str, batches: list[np.ndarray]) -> None:
        self.input_name = input_name
        self.batches = batches
        self.set_range(0, len(batches))

    def __len__(self) -> int:
        return len(self.batches)

    def set_range(self, start_index: int, end_index: int) -> None:
        self._pending = iter(self.batches[start_index:end_index])

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self._pending, None)
        return None if batch is None else {self.input_name: batch}

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        item = self.get_next()
        if item is None:
            raise StopIteration
        return item
