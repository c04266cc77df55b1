"""Static int8 quantisation of an exported ONNX model, and the parity gate it must pass.

onnxruntime's own tooling does the work: :func:`quantize_int8` folds the exported padding
(:mod:`melanoscan.inference.onnx_graph`), runs ``quant_pre_process`` (shape inference, graph
optimisation), rounds the weights onto the int8 grid with preserved kernel sums and corrected
biases (:mod:`melanoscan.inference.weight_rounding`), then ``quantize_static`` in QDQ format
with per-channel int8 weights, calibrated on preprocessed training images
(:func:`calibration_inputs`).
Dynamic quantisation is not offered: it quantises only MatMul/Gemm-like ops well and is known
to break the depthwise convolutions of EfficientNet-Lite.

A quantised model is only worth shipping if it decides like the fp32 one.
:func:`parity_report` compares the two on labelled images and :func:`passes` applies the gate:
top-1 agreement >= 99%, melanoma AUC within 0.005, identical alert decision on >= 99% of images.
"""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from melanoscan.bundle import INT8_ONNX_FILE
from melanoscan.calibration import softmax
from melanoscan.inference.onnx_graph import fold_static_padding
from melanoscan.inference.weight_rounding import prepare_weights

__all__ = [
    "EFFICIENTNET_FLOAT_PREFIX",
    "INT8_ONNX_FILE",
    "MAX_AUC_DIFFERENCE",
    "MIN_ALERT_AGREEMENT",
    "MIN_TOP1_AGREEMENT",
    "GateVerdict",
    "QuantizationError",
    "QuantizationSettings",
    "bundle_split_files",
    "calibration_files",
    "calibration_inputs",
    "labelled_inputs",
    "onnx_session",
    "parity_from_logits",
    "parity_report",
    "passes",
    "quantize_int8",
    "run_onnx",
    "validation_inputs",
]

MIN_TOP1_AGREEMENT = 0.99
MAX_AUC_DIFFERENCE = 0.005
MIN_ALERT_AGREEMENT = 0.99
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
    batches = list(_batches(calibration_inputs, batch_size))
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


def _batches(inputs: Iterable[np.ndarray] | np.ndarray, size: int) -> Iterator[np.ndarray]:
    """Contiguous float32 batches of at most ``size`` from inputs and/or batches of inputs."""
    if isinstance(inputs, np.ndarray):
        inputs = [inputs]
    pending: list[np.ndarray] = []
    count = 0
    for item in inputs:
        array = np.asarray(item, dtype=np.float32)
        array = array[None] if array.ndim == 3 else array
        if array.ndim != 4:
            raise ValueError(f"model inputs must be (3, S, S) or (N, 3, S, S), got {array.shape}")
        pending.append(array)
        count += len(array)
        while count >= size:
            joined = np.concatenate(pending)
            yield np.ascontiguousarray(joined[:size])
            pending, count = [joined[size:]], len(joined) - size
    if count:
        yield np.ascontiguousarray(np.concatenate(pending))


def calibration_files(
    bundle_dir: Path, count: int = 300, seed: int = 0, sources: Sequence[str | Path] | None = None
) -> list[Path]:
    """A class-balanced random sample of the images a bundle was trained on.

    The bundle lists its training images by content hash (``training_images.csv``); candidates
    from its training sources are decoded, hashed and kept when they are training (not
    validation) images, taking the classes in turn so that rare classes are represented.

    Args:
        bundle_dir: the bundle.
        count: how many images.
        seed: sampling seed.
        sources: data sources to look in (``None``: the bundle's ``training.sources``, as
            recorded, i.e. relative to where it was trained).

    Raises:
        QuantizationError: the bundle lists no training image or none was found.
    """
    return [path for path, _ in bundle_split_files(bundle_dir, "train", count, seed, sources)]


def bundle_split_files(
    bundle_dir: Path,
    split: str,
    count: int,
    seed: int = 0,
    sources: Sequence[str | Path] | None = None,
    balanced: bool = True,
) -> list[tuple[Path, str]]:
    """A random sample of the images of one split (``train`` or ``val``) of a bundle's training.

    Candidates from the sources are decoded, hashed and kept when ``training_images.csv`` lists
    their content under ``split``; each content at most once.

    Args:
        bundle_dir: the bundle.
        split: ``train`` (e.g. to calibrate a quantisation) or ``val`` (to check it).
        count: how many images (fewer when the sources hold fewer).
        seed: sampling seed.
        sources: data sources to look in (``None``: the bundle's ``training.sources``, as
            recorded, i.e. relative to where it was trained).
        balanced: take the classes in turn, so that rare classes are represented; else a
            plain random sample, with the split's class mix.

    Returns:
        ``(path, label)`` pairs.

    Raises:
        QuantizationError: the bundle lists no image of ``split`` or none was found.
    """
    from melanoscan.bundle import TRAINING_IMAGES_FILE, read_metadata
    from melanoscan.data.images import ImageDecodeError, decode, pixel_hash
    from melanoscan.data.sources import read_sources

    bundle_dir = Path(bundle_dir)
    listed = bundle_dir / TRAINING_IMAGES_FILE
    if not listed.is_file():
        raise QuantizationError(f"{bundle_dir} lists no training images ({listed.name})")
    import pandas as pd

    trained = pd.read_csv(listed)
    hashes = set(trained.loc[trained["split"] == split, "content_hash"])
    sources = list(sources or read_metadata(bundle_dir).training.get("sources") or [])
    if not hashes or not sources:
        raise QuantizationError(f"{bundle_dir} records no {split} image or no source")
    table = read_sources(sources).images
    rng = np.random.default_rng(seed)
    groups = table.groupby("label", sort=True) if balanced else [("", table)]
    queues = [list(rng.permutation(group[["path", "label"]].to_numpy()))
              for _, group in groups]
    picked: list[tuple[Path, str]] = []
    seen: set[str] = set()
    while len(picked) < count and any(queues):
        for queue in queues:
            while queue:
                path, label = queue.pop()
                try:
                    digest = pixel_hash(decode(Path(path)).image)
                except ImageDecodeError:
                    continue
                if digest in hashes and digest not in seen:
                    seen.add(digest)
                    picked.append((Path(path), str(label)))
                    break
            if len(picked) == count:
                break
    if not picked:
        raise QuantizationError(f"none of the {split} images of {bundle_dir} is in "
                                f"{', '.join(map(str, sources))}")
    return picked


def validation_inputs(
    bundle_dir: Path, count: int = 1000, seed: int = 0,
    sources: Sequence[str | Path] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Preprocessed inputs and melanoma truth of a random sample of a bundle's validation images,
    for :func:`parity_report` (:func:`bundle_split_files` with ``split="val"``, unbalanced).

    Args:
        bundle_dir: the bundle.
        count: how many images.
        seed: sampling seed.
        sources: see :func:`bundle_split_files`.
    """
    from melanoscan import taxonomy

    picked = bundle_split_files(bundle_dir, "val", count, seed, sources, balanced=False)
    inputs = _preprocessed(bundle_dir, [path for path, _ in picked])
    return inputs, np.array([label == taxonomy.MELANOMA for _, label in picked], dtype=bool)


def _preprocessed(bundle_dir: Path, files: Sequence[Path]) -> np.ndarray:
    """The bundle's preprocessing of image files, ``(N, 3, S, S)``."""
    from melanoscan.bundle import read_metadata
    from melanoscan.data.images import decode
    from melanoscan.preprocess import Preprocessing

    preprocessing = Preprocessing.from_dict(read_metadata(bundle_dir).preprocessing)
    return np.stack([preprocessing(decode(path).image) for path in files])


def calibration_inputs(
    bundle_dir: Path, count: int = 300, seed: int = 0, sources: Sequence[str | Path] | None = None
) -> np.ndarray:
    """Preprocessed inputs ``(N, 3, S, S)`` of :func:`calibration_files`, with the bundle's recipe.

    Args:
        bundle_dir: the bundle.
        count: how many images.
        seed: sampling seed.
        sources: see :func:`calibration_files`.
    """
    return _preprocessed(bundle_dir, calibration_files(bundle_dir, count, seed, sources))


def labelled_inputs(
    bundle_dir: Path, data: Path, limit: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Preprocessed inputs and melanoma truth of a labelled set, for :func:`parity_report`.

    Args:
        bundle_dir: the bundle whose preprocessing is applied.
        data: any source :func:`melanoscan.data.sources.read_source` reads (e.g. the ISIC 2018
            Task 3 test folder); rows are taken in path order.
        limit: only the first ``limit`` images.

    Returns:
        ``(inputs (N, 3, S, S) float32, melanoma (N,) bool)``; unreadable files are skipped.
    """
    from melanoscan import taxonomy
    from melanoscan.bundle import read_metadata
    from melanoscan.data.images import ImageDecodeError, decode
    from melanoscan.data.sources import read_sources
    from melanoscan.preprocess import Preprocessing

    table = read_sources([data]).images.sort_values("path").reset_index(drop=True)
    if limit:
        table = table.iloc[:limit]
    preprocessing = Preprocessing.from_dict(read_metadata(bundle_dir).preprocessing)
    arrays, melanoma = [], []
    for path, label in zip(table["path"], table["label"], strict=True):
        try:
            arrays.append(preprocessing(decode(path).image))
        except ImageDecodeError:
            continue
        melanoma.append(label == taxonomy.MELANOMA)
    if not arrays:
        raise QuantizationError(f"no readable labelled image in {data}")
    return np.stack(arrays), np.asarray(melanoma, dtype=bool)


def onnx_session(path: Path, threads: int | None = None) -> Any:
    """An onnxruntime CPU session (all graph optimisations; QDQ pairs fuse into int8 kernels).

    Args:
        path: the ONNX model.
        threads: intra-op threads (``None``: onnxruntime's default, one per core).
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads is not None:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def run_onnx(
    session: Any, inputs: np.ndarray | Iterable[np.ndarray], batch_size: int = 64
) -> dict[str, np.ndarray]:
    """Every output of ``session`` for ``inputs``, by output name, batches concatenated.

    Args:
        session: an onnxruntime session (see :func:`onnx_session`).
        inputs: preprocessed inputs ``(N, 3, S, S)`` or an iterable of inputs and/or batches.
        batch_size: images per ``run`` call.
    """
    input_name = session.get_inputs()[0].name
    names = [o.name for o in session.get_outputs()]
    parts: dict[str, list[np.ndarray]] = {name: [] for name in names}
    for batch in _batches(inputs, batch_size):
        for name, value in zip(names, session.run(None, {input_name: batch}), strict=True):
            parts[name].append(value)
    return {name: np.concatenate(values) for name, values in parts.items() if values}


def parity_from_logits(
    fp32_logits: np.ndarray,
    int8_logits: np.ndarray,
    labels_melanoma: np.ndarray,
    temperature: float,
    alert_threshold: float,
    melanoma_index: int,
) -> dict[str, Any]:
    """The parity figures of two models' logits on the same labelled images.

    Args:
        fp32_logits: reference logits ``(N, classes)``.
        int8_logits: candidate logits ``(N, classes)``.
        labels_melanoma: ``(N,)`` truth, true for melanoma.
        temperature: the bundle's calibration temperature.
        alert_threshold: the bundle's melanoma alert threshold (on the calibrated probability).
        melanoma_index: melanoma's column in the logits.

    Returns:
        ``images``, ``top1_agreement``, ``melanoma_auc_fp32`` / ``_int8`` (``None`` when the
        labels hold one class only), ``auc_difference`` (int8 - fp32), ``alert_agreement``,
        ``alerts_fp32`` / ``_int8``, ``max_abs_logit_difference``, ``mean_abs_logit_difference``,
        ``max_abs_melanoma_probability_difference``.
    """
    from sklearn.metrics import roc_auc_score

    reference = np.asarray(fp32_logits, dtype=np.float64)
    candidate = np.asarray(int8_logits, dtype=np.float64)
    labels = np.asarray(labels_melanoma).astype(bool)
    if reference.shape != candidate.shape or reference.ndim != 2:
        raise ValueError(f"logits must have equal (N, classes) shapes, got {reference.shape} "
                         f"and {candidate.shape}")
    if len(labels) != len(reference) or not len(labels):
        raise ValueError("one melanoma label per image, and at least one image, are needed")
    p_ref = softmax(reference, temperature)[:, melanoma_index]
    p_new = softmax(candidate, temperature)[:, melanoma_index]
    both_classes = 0 < labels.sum() < len(labels)
    auc_ref = float(roc_auc_score(labels, p_ref)) if both_classes else None
    auc_new = float(roc_auc_score(labels, p_new)) if both_classes else None
    difference = reference - candidate
    return {
        "images": len(labels),
        "melanoma_images": int(labels.sum()),
        "top1_agreement": float(np.mean(reference.argmax(1) == candidate.argmax(1))),
        "melanoma_auc_fp32": auc_ref,
        "melanoma_auc_int8": auc_new,
        "auc_difference": None if auc_ref is None or auc_new is None else auc_new - auc_ref,
        "alert_agreement": float(np.mean((p_ref >= alert_threshold) == (p_new >= alert_threshold))),
        "alerts_fp32": int((p_ref >= alert_threshold).sum()),
        "alerts_int8": int((p_new >= alert_threshold).sum()),
        "max_abs_logit_difference": float(np.abs(difference).max()),
        "mean_abs_logit_difference": float(np.abs(difference).mean()),
        "max_abs_melanoma_probability_difference": float(np.abs(p_ref - p_new).max()),
        "temperature": float(temperature),
        "alert_threshold": float(alert_threshold),
    }


def parity_report(
    fp32_onnx: Path,
    int8_onnx: Path,
    inputs: np.ndarray | Iterable[np.ndarray],
    labels_melanoma: np.ndarray,
    temperature: float,
    alert_threshold: float,
    melanoma_index: int,
    logits_output: str = "logits",
) -> dict[str, Any]:
    """Run both models on the same preprocessed inputs and compare (:func:`parity_from_logits`).

    Outputs other than the logits (e.g. features) are compared too: their maximum absolute
    difference is under ``other_outputs``.

    Args:
        fp32_onnx: the reference model.
        int8_onnx: the quantised model.
        inputs: preprocessed inputs ``(N, 3, S, S)`` (or an iterable of inputs / batches).
        labels_melanoma: ``(N,)`` truth, true for melanoma.
        temperature: the bundle's calibration temperature.
        alert_threshold: the bundle's melanoma alert threshold.
        melanoma_index: melanoma's column in the logits.
        logits_output: name of the logits output (the first output when no output has it).
    """
    if not isinstance(inputs, np.ndarray):
        inputs = list(inputs)
    reference = run_onnx(onnx_session(Path(fp32_onnx)), inputs)
    candidate = run_onnx(onnx_session(Path(int8_onnx)), inputs)
    if list(reference) != list(candidate):
        raise ValueError(f"the models' outputs differ: {list(reference)} vs {list(candidate)}")
    name = logits_output if logits_output in reference else next(iter(reference))
    report = parity_from_logits(reference[name], candidate[name], labels_melanoma, temperature,
                                alert_threshold, melanoma_index)
    report["other_outputs"] = {
        other: {"max_abs_difference": float(np.abs(reference[other] - candidate[other]).max())}
        for other in reference if other != name
    }
    return report


@dataclass(frozen=True)
class GateVerdict:
    """Whether a quantised model passes the parity gate; true in a boolean context iff it does.

    Args:
        passed: every criterion is met.
        reasons: one line per criterion missed (empty when passed).
    """

    passed: bool
    reasons: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return self.passed


def passes(report: dict[str, Any]) -> GateVerdict:
    """The parity gate: top-1 agreement >= 99%, |AUC difference| <= 0.005, alerts agree >= 99%.

    Args:
        report: from :func:`parity_report` or :func:`parity_from_logits`.
    """
    reasons = []
    top1 = report["top1_agreement"]
    if top1 < MIN_TOP1_AGREEMENT:
        reasons.append(f"top-1 agreement {top1:.2%} is below {MIN_TOP1_AGREEMENT:.0%}")
    difference = report.get("auc_difference")
    if difference is None:
        reasons.append("melanoma AUC cannot be compared: the images need both melanoma and "
                       "other lesions")
    elif abs(difference) > MAX_AUC_DIFFERENCE:
        reasons.append(
            f"melanoma AUC moves by {difference:+.4f} ({report['melanoma_auc_fp32']:.4f} -> "
            f"{report['melanoma_auc_int8']:.4f}), more than {MAX_AUC_DIFFERENCE}"
        )
    alerts = report["alert_agreement"]
    if alerts < MIN_ALERT_AGREEMENT:
        reasons.append(f"identical alert decision on {alerts:.2%} of images, below "
                       f"{MIN_ALERT_AGREEMENT:.0%}")
    return GateVerdict(not reasons, reasons)
