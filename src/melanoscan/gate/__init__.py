"""The dermoscopy gate: know when not to answer.

Every prediction path asks it first whether an image is a dermoscopy image good enough to read:
``ok``, ``not_dermoscopy`` (out of distribution, or greyscale) or ``poor_quality`` (tiny,
blank, badly exposed or blurred). It is fitted with the model, on the model's own features of
dermoscopy images (and optionally of example non-dermoscopy images), and stored in the bundle
(``gate.npz`` and the ``gate`` block of ``bundle.json``). See docs/GATE.md.
"""

from melanoscan.gate.core import (
    FLAGGED,
    GATE_FILE,
    NOT_DERMOSCOPY,
    OK,
    POOR_QUALITY,
    UNCHECKED,
    VERDICT_LABELS,
    VERDICTS,
    Gate,
    GateVerdict,
    fit_contrast,
    fit_statistics,
    load_gate,
    save_gate,
)
from melanoscan.gate.quality import ImageQuality, QualityLimits, measure_quality

__all__ = [
    "FLAGGED",
    "GATE_FILE",
    "NOT_DERMOSCOPY",
    "OK",
    "POOR_QUALITY",
    "UNCHECKED",
    "VERDICTS",
    "VERDICT_LABELS",
    "Gate",
    "GateVerdict",
    "ImageQuality",
    "QualityLimits",
    "fit_contrast",
    "fit_statistics",
    "load_gate",
    "measure_quality",
    "save_gate",
]
