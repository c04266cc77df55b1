"""Whether a quantised model decides like its fp32 original: the parity gate.

:func:`parity_report` runs both ONNX models on the same preprocessed labelled images and
:func:`passes` applies the gate: top-1 agreement >= 99%, melanoma AUC within 0.005, identical
alert decision (with the bundle's temperature and threshold) on >= 99% of images.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from melanoscan.calibration import softmax

__all__ = [
    "MAX_AUC_DIFFERENCE",
    "MIN_ALERT_AGREEMENT",
    "MIN_TOP1_AGREEMENT",
    "GateVerdict",
    "input_batches",
    "onnx_session",
    "parity_from_logits",
    "parity_report",
    "passes",
    "run_onnx",
]

MIN_TOP1_AGREEMENT = 0.99
MAX_AUC_DIFFERENCE = 0.005
MIN_ALERT_AGREEMENT = 0.99


def input_batches(inputs: Iterable[np.ndarray] | np.ndarray, size: int) -> Iterator[np.ndarray]:
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
    for batch in input_batches(inputs, batch_size):
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
