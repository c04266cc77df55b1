"""The model bundle: weights plus the versioned metadata every later step reads.

A bundle is a directory::

    bundle.json           classes, architecture, preprocessing, training summary, metrics,
                          calibration (temperature, melanoma alert threshold)
    weights.pt            the network's state dict (loaded with ``weights_only=True``); its
                          floating-point tensors may be stored in half precision
                          (:func:`halve_weights`) and are always loaded back as float32
    training_images.csv   content hash, ISIC id, label and split of every image trained or
                          validated on, so evaluation can refuse a "test" set that overlaps training
    gate.npz              the dermoscopy gate's fitted statistics (optional; described by the
                          ``gate`` block of bundle.json, see melanoscan.gate)
    model.onnx            the ONNX export (optional; ``exports.onnx`` in bundle.json records the
                          SHA-256 of the weights.pt it was made from)
    model.int8.onnx       its int8 quantisation (optional; ``exports.onnx_int8`` records the
                          weights it was made from and the parity check it passed)

Training writes it, calibration and export amend it, evaluation, prediction and serving read it.
"""

from __future__ import annotations

import hashlib
import io
import json
import pickle
import warnings
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as package_version
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd

from melanoscan import __version__
from melanoscan.calibration import DEFAULT_ALERT_THRESHOLD
from melanoscan.files import NAME_ERRORS, atomic_write, staged_directory, write_csv
from melanoscan.preprocess import Preprocessing

if TYPE_CHECKING:  # torch is imported only where weights are read or run, so that reading
    import torch  # metadata and ONNX inference stay light
    from torch import nn

    from melanoscan.models.interface import ImageClassifier

__all__ = [
    "BUNDLE_FORMAT",
    "FORMAT_VERSION",
    "Bundle",
    "BundleError",
    "BundleMetadata",
    "HalvedWeights",
    "OnnxState",
    "atomic_write",
    "calibration_state",
    "default_bundle_path",
    "file_sha256",
    "halve_weights",
    "installed_versions",
    "int8_path",
    "int8_state",
    "load_bundle",
    "onnx_path",
    "onnx_state",
    "read_metadata",
    "read_training_images",
    "resolve_bundle_path",
    "save_bundle",
    "staged_directory",
    "warn_if_versions_differ",
    "weights_sha256",
    "write_metadata",
]

BUNDLE_FORMAT = "melanoscan-model-bundle"
FORMAT_VERSION = 1
METADATA_FILE = "bundle.json"
WEIGHTS_FILE = "weights.pt"
TRAINING_IMAGES_FILE = "training_images.csv"
ONNX_FILE = "model.onnx"
INT8_ONNX_FILE = "model.int8.onnx"
INT8_EXPORT = "onnx_int8"
"""Key of the int8 model's record in ``exports``."""
VERSIONED_PACKAGES = ("torch", "onnxruntime", "Pillow", "numpy")
"""Packages whose version can change a bundle's outputs; recorded in ``versions``."""

OnnxState = Literal["absent", "unknown", "current", "stale"]
CalibrationState = Literal["absent", "unknown", "current", "stale"]


class BundleError(Exception):
    """A bundle is missing, broken, or from a newer format than this melanoscan reads."""


def _empty_calibration() -> dict[str, Any]:
    return {"temperature": None, "alert_threshold": None, "target_sensitivity": None,
            "fitted_on": None}


@dataclass
class BundleMetadata:
    """What a bundle holds besides its weights.

    Args:
        name: model name shown to users.
        classes: output classes, in logit order.
        architecture: ``{"name": registered model name, "kwargs": constructor arguments}``.
        preprocessing: :meth:`Preprocessing.to_dict` of the recipe the model was trained with.
        training: data summary (sources, counts per split and class, exclusions, skipped files),
            the resolved config and how training went.
        validation_metrics: figures on the validation split.
        calibration: temperature and melanoma alert threshold (``None`` until calibrated), the
            target sensitivity and the data they were fitted on.
        exports: other forms of the same weights in the bundle (``{"onnx": {"file": ...}}``).
        gate: the dermoscopy gate (:mod:`melanoscan.gate`): its file, method, threshold, quality
            limits and what it was fitted on; empty for a bundle without one.
        test_metrics: headline figures on held-out test sets, for a shipped model's card.
        versions: the versions of :data:`VERSIONED_PACKAGES` the weights were saved (or last
            exported) under (``None``: not installed); empty for a bundle from before this record.
        melanoscan_version: version that wrote the bundle.
        created: UTC timestamp (ISO 8601).
        format: always :data:`BUNDLE_FORMAT`.
        format_version: bundle layout version, :data:`FORMAT_VERSION` when written.
    """

    name: str
    classes: list[str]
    architecture: dict[str, Any]
    preprocessing: dict[str, Any]
    training: dict[str, Any] = field(default_factory=dict)
    validation_metrics: dict[str, Any] = field(default_factory=dict)
    calibration: dict[str, Any] = field(default_factory=_empty_calibration)
    exports: dict[str, Any] = field(default_factory=dict)
    gate: dict[str, Any] = field(default_factory=dict)
    test_metrics: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, str | None] = field(default_factory=dict)
    melanoscan_version: str = __version__
    created: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    format: str = BUNDLE_FORMAT
    format_version: int = FORMAT_VERSION

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Bundle:
    """A loaded bundle: a ready model in eval mode, its metadata and its preprocessing.

    Args:
        path: the bundle directory.
        metadata: its metadata.
        model: the network with the bundle's weights, in eval mode.
        preprocessing: the recipe images must go through before ``model``.
    """

    path: Path
    metadata: BundleMetadata
    model: ImageClassifier
    preprocessing: Preprocessing

    @property
    def classes(self) -> list[str]:
        return list(self.metadata.classes)

    @property
    def temperature(self) -> float:
        return float(self.metadata.calibration.get("temperature") or 1.0)

    def logits_and_features(self, inputs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Logits ``(N, classes)`` and the gate's features ``(N, D)`` in one forward pass."""
        import torch

        from melanoscan.models.features import LogitsAndFeatures

        device = next(self.model.parameters()).device
        with torch.inference_mode():
            batch = torch.from_numpy(np.ascontiguousarray(inputs)).to(device)
            logits, features = LogitsAndFeatures(self.model)(batch)
            return logits.float().cpu().numpy(), features.float().cpu().numpy()

    def training_images(self) -> pd.DataFrame:
        """Content hash, label and split of every image trained or validated on."""
        return read_training_images(self.path)


def read_training_images(bundle_dir: Path) -> pd.DataFrame:
    """Content hash, label and split of every image a bundle was trained or validated on."""
    path = bundle_dir / TRAINING_IMAGES_FILE
    if not path.exists():
        return pd.DataFrame(columns=["content_hash", "label", "split"])
    return pd.read_csv(path, encoding_errors=NAME_ERRORS)


def save_bundle(
    directory: Path,
    model: nn.Module,
    metadata: BundleMetadata,
    training_images: pd.DataFrame | None = None,
) -> Path:
    """Write a bundle into ``directory`` (created if needed); each file is replaced atomically.

    Records the installed :data:`VERSIONED_PACKAGES` in ``metadata.versions``. An ONNX export
    (fp32 or int8) there that was not made from these weights is deleted, with its ``exports``
    record. A fitted ``calibration`` without a record of its weights is taken to be fitted on
    these: their SHA-256 is recorded in it (:func:`calibration_state`).

    Raises:
        OSError: a file could not be written (full disk); see :func:`staged_directory` for
            never leaving a partial bundle.
    """
    import torch

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    # Serialised in memory: torch.save into a file reports a full disk as a RuntimeError.
    buffer = io.BytesIO()
    torch.save(state, buffer)
    atomic_write(directory / WEIGHTS_FILE, lambda tmp: tmp.write_bytes(buffer.getbuffer()))
    onnx_record = metadata.exports.get("onnx")
    if onnx_record is None or onnx_record.get("weights_sha256") != weights_sha256(directory):
        onnx_path(directory, metadata).unlink(missing_ok=True)
        (directory / ONNX_FILE).unlink(missing_ok=True)
        metadata.exports.pop("onnx", None)
    _drop_stale_int8(directory, metadata)
    if (metadata.calibration.get("alert_threshold") is not None
            and not metadata.calibration.get("weights_sha256")):
        metadata.calibration["weights_sha256"] = weights_sha256(directory)
    metadata.versions = installed_versions()
    if training_images is not None:
        columns = [c for c in ("content_hash", "image_id", "label", "split", "source")
                   if c in training_images]
        write_csv(training_images[columns], directory / TRAINING_IMAGES_FILE)
    write_metadata(directory, metadata)
    return directory


def write_metadata(directory: Path, metadata: BundleMetadata) -> None:
    """Write (or replace) ``bundle.json``; calibration and export use this to amend a bundle."""
    text = json.dumps(metadata.to_dict(), indent=2, default=_json_default) + "\n"
    atomic_write(Path(directory) / METADATA_FILE, lambda tmp: tmp.write_text(text))


def read_metadata(path: Path | str) -> BundleMetadata:
    """Read and check a bundle's metadata.

    Raises:
        BundleError: no bundle there, unreadable or invalid metadata, or a newer format.
    """
    directory = Path(path)
    if directory.name == METADATA_FILE:
        directory = directory.parent
    meta_path = directory / METADATA_FILE
    if not meta_path.is_file():
        raise BundleError(f"{directory} is not a model bundle: {METADATA_FILE} is missing")
    try:
        values = json.loads(meta_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(f"{meta_path} is unreadable or not valid JSON: {exc}") from None
    if not isinstance(values, dict) or values.get("format") != BUNDLE_FORMAT:
        raise BundleError(f"{meta_path} is not melanoscan bundle metadata")
    version = values.get("format_version")
    if not isinstance(version, int):
        raise BundleError(f"{meta_path} has no valid format_version")
    if version > FORMAT_VERSION:
        raise BundleError(
            f"{directory} uses bundle format {version}, newer than this melanoscan "
            f"({__version__}) reads (format {FORMAT_VERSION}); upgrade melanoscan"
        )
    known = set(BundleMetadata.__dataclass_fields__)
    try:
        return BundleMetadata(**{k: v for k, v in values.items() if k in known})
    except TypeError as exc:
        raise BundleError(f"{meta_path} is incomplete: {exc}") from None


def default_bundle_path() -> Path:
    """Where the model shipped inside the package lives."""
    return Path(__file__).parent / "model"


def resolve_bundle_path(path: Path | str | None) -> Path:
    """``path``, or the shipped model when ``None``.

    Raises:
        BundleError: ``None`` given and no model ships with this installation.
    """
    if path is not None:
        return Path(path)
    shipped = default_bundle_path()
    if not (shipped / METADATA_FILE).is_file():
        raise BundleError(
            "no model is bundled with this melanoscan yet; pass --model RUN_DIR/bundle"
        )
    return shipped


def load_bundle(
    path: Path | str, device: str | torch.device = "cpu", *, check_versions: bool = True
) -> Bundle:
    """Load a bundle into a ready model (eval mode, on ``device``).

    Args:
        path: the bundle directory.
        device: where the model goes.
        check_versions: warn when torch, Pillow or numpy differ from the bundle's record.

    Raises:
        BundleError: see :func:`read_metadata`; also missing or mismatched weights.
    """
    import torch

    from melanoscan.models.factory import create_model, get_model_spec

    directory = Path(path)
    if directory.name == METADATA_FILE:
        directory = directory.parent
    metadata = read_metadata(directory)
    if check_versions:
        warn_if_versions_differ(directory, metadata, ("torch", "Pillow", "numpy"))
    try:
        preprocessing = Preprocessing.from_dict(metadata.preprocessing)
        arch = metadata.architecture
        # Bundles that predate a size argument are built for their preprocessing's size.
        kwargs = get_model_spec(arch["name"]).constructor_kwargs(
            preprocessing.image_size, arch.get("kwargs", {})
        )
        model = create_model(arch["name"], num_classes=len(metadata.classes), **kwargs)
    except (KeyError, TypeError, ValueError) as exc:
        raise BundleError(f"{directory}: invalid architecture or preprocessing: {exc}") from None
    weights = directory / WEIGHTS_FILE
    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
        model.load_state_dict(_as_float32(state))
    except FileNotFoundError:
        raise BundleError(f"{directory} has no weights ({WEIGHTS_FILE} is missing)") from None
    except (RuntimeError, OSError, EOFError, ValueError, pickle.UnpicklingError) as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise BundleError(f"{weights} does not load into {arch['name']}: {first_line}") from None
    model.to(device).eval()
    return Bundle(directory, metadata, model, preprocessing)


def weights_sha256(directory: Path | str) -> str | None:
    """SHA-256 of the bundle's ``weights.pt`` (``None`` when it has none)."""
    path = Path(directory) / WEIGHTS_FILE
    if not path.is_file():
        return None
    return file_sha256(path)


def onnx_path(directory: Path | str, metadata: BundleMetadata) -> Path:
    """Where the bundle's ONNX export is (or would be)."""
    return Path(directory) / metadata.exports.get("onnx", {}).get("file", ONNX_FILE)


def onnx_state(directory: Path | str, metadata: BundleMetadata) -> OnnxState:
    """Whether the ONNX export was made from the bundle's current weights.

    Returns:
        ``absent`` (no ONNX file), ``current`` (made from ``weights.pt`` as it is), ``stale``
        (made from other weights: run ``melanoscan export`` again) or ``unknown`` (exported
        before melanoscan recorded the weights' hash: used as is).
    """
    if not onnx_path(directory, metadata).is_file():
        return "absent"
    recorded = metadata.exports.get("onnx", {}).get("weights_sha256")
    if recorded is None:
        return "unknown"
    return "current" if recorded == weights_sha256(directory) else "stale"


def calibration_state(directory: Path | str, metadata: BundleMetadata) -> CalibrationState:
    """Whether the temperature and alert threshold were fitted for the bundle's current weights.

    Returns:
        ``absent`` (not calibrated), ``current``, ``stale`` (fitted for other weights, e.g.
        before :func:`halve_weights`: run ``melanoscan calibrate`` again) or ``unknown``
        (calibrated before melanoscan recorded the weights' hash: used as is).
    """
    calibration = metadata.calibration
    if calibration.get("alert_threshold") is None:
        return "absent"
    recorded = calibration.get("weights_sha256")
    if not recorded:
        return "unknown"
    return "current" if recorded == weights_sha256(directory) else "stale"


@dataclass(frozen=True)
class HalvedWeights:
    """What :func:`halve_weights` did.

    Args:
        converted: floating-point tensors now stored in half precision (0: already were).
        bytes_before: size of ``weights.pt`` before.
        bytes_after: its size after.
        removed: export files deleted because they were made from the previous weights.
        stale: records that no longer match the weights and must be refitted, each with the
            command that does it.
    """

    converted: int
    bytes_before: int
    bytes_after: int
    removed: list[str]
    stale: list[str]


def halve_weights(directory: Path | str) -> HalvedWeights:
    """Store the bundle's ``weights.pt`` in half precision (float16): half the size.

    :func:`load_bundle` loads them back as float32, so inference and fine-tuning run in float32
    on weights rounded to float16 (a relative change of at most 2**-11 per weight). The file's
    SHA-256 changes, so whatever was fitted or exported for the previous weights no longer
    matches: ONNX exports (fp32 and int8) are deleted with their records; the calibration is
    kept but marked as fitted for the previous weights (:func:`calibration_state` ``stale``:
    rerun ``melanoscan calibrate``); the dermoscopy gate, which records the weights it was
    fitted for, switches itself off until refitted (``melanoscan calibrate --gate-only``).

    Args:
        directory: the bundle, changed in place.

    Raises:
        BundleError: no bundle or no weights there, or a weight too large for float16.
    """
    import torch

    directory = Path(directory)
    metadata = read_metadata(directory)
    weights = directory / WEIGHTS_FILE
    if not weights.is_file():
        raise BundleError(f"{directory} has no weights ({WEIGHTS_FILE} is missing)")
    state = torch.load(weights, map_location="cpu", weights_only=True)
    wide = [k for k, v in state.items() if v.is_floating_point() and v.dtype != torch.float16]
    before = weights.stat().st_size
    if not wide:
        return HalvedWeights(0, before, before, [], [])
    largest = max(float(state[k].abs().max()) for k in wide if state[k].numel())
    if largest > float(torch.finfo(torch.float16).max):
        raise BundleError(f"{weights}: a weight of magnitude {largest:.3g} does not fit float16")
    previous = weights_sha256(directory)
    halved = {k: v.half() if k in wide else v for k, v in state.items()}
    buffer = io.BytesIO()
    torch.save(halved, buffer)
    atomic_write(weights, lambda tmp: tmp.write_bytes(buffer.getbuffer()))
    removed = [p.name for p in (onnx_path(directory, metadata), int8_path(directory, metadata))
               if p.is_file()]
    for name in removed:
        (directory / name).unlink()
    metadata.exports.pop("onnx", None)
    metadata.exports.pop(INT8_EXPORT, None)
    stale = []
    if metadata.calibration.get("alert_threshold") is not None:
        if not metadata.calibration.get("weights_sha256"):  # fitted for the previous weights
            metadata.calibration["weights_sha256"] = previous
        stale.append(f"calibration (temperature, alert threshold): melanoscan calibrate "
                     f"--model {directory} --data HELD_OUT_DATA")
    if metadata.gate:
        stale.append(f"dermoscopy gate (off until refitted): melanoscan calibrate --model "
                     f"{directory} --gate-only --data TRAINING_DATA")
    write_metadata(directory, metadata)
    return HalvedWeights(len(wide), before, weights.stat().st_size, removed, stale)


def int8_path(directory: Path | str, metadata: BundleMetadata) -> Path:
    """Where the bundle's int8 model is (or would be)."""
    return Path(directory) / metadata.exports.get(INT8_EXPORT, {}).get("file", INT8_ONNX_FILE)


def int8_state(directory: Path | str, metadata: BundleMetadata) -> OnnxState:
    """Whether the int8 model may stand in for the bundle's weights.

    Returns:
        ``absent`` (no int8 model, or no record of a parity check it passed), ``current`` (made
        from ``weights.pt`` as it is, passed its parity check with the bundle's present
        temperature and alert threshold, and the file is the one checked) or ``stale``
        (any of those changed: run ``melanoscan export --int8`` again).
    """
    path = int8_path(directory, metadata)
    record = metadata.exports.get(INT8_EXPORT)
    if not path.is_file() or not record or not record.get("parity", {}).get("passed"):
        return "absent"
    parity = record["parity"]
    calibration = metadata.calibration
    if (record.get("weights_sha256") != weights_sha256(directory)
            or parity.get("temperature") != float(calibration.get("temperature") or 1.0)
            or parity.get("alert_threshold") != float(calibration.get("alert_threshold")
                                                      or DEFAULT_ALERT_THRESHOLD)
            or record.get("sha256") != file_sha256(path)):
        return "stale"
    return "current"


def file_sha256(path: Path | str) -> str:
    """SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _drop_stale_int8(directory: Path, metadata: BundleMetadata) -> None:
    """Delete an int8 model made from other weights than ``weights.pt``, with its record."""
    record = metadata.exports.get(INT8_EXPORT)
    if record is None or record.get("weights_sha256") != weights_sha256(directory):
        int8_path(directory, metadata).unlink(missing_ok=True)
        (directory / INT8_ONNX_FILE).unlink(missing_ok=True)
        metadata.exports.pop(INT8_EXPORT, None)


def _as_float32(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The state dict with half-precision tensors (:func:`halve_weights`) back in float32."""
    import torch

    return {k: v.float() if v.dtype in (torch.float16, torch.bfloat16) else v
            for k, v in state.items()}


def installed_versions() -> dict[str, str | None]:
    """The installed version of each of :data:`VERSIONED_PACKAGES` (``None``: not installed)."""
    versions: dict[str, str | None] = {}
    for name in VERSIONED_PACKAGES:
        try:
            versions[name] = package_version(name)
        except PackageNotFoundError:
            versions[name] = None
    return versions


def warn_if_versions_differ(
    directory: Path | str, metadata: BundleMetadata, packages: Iterable[str]
) -> None:
    """One warning naming every package in ``packages`` installed at another version than the
    bundle records (local build tags such as ``+cpu`` aside); silent for a bundle without the
    record, or a package either side lacks."""
    installed = installed_versions()
    differences = [
        f"{name} {metadata.versions[name]} -> {installed[name]}"
        for name in packages
        if metadata.versions.get(name) and installed.get(name)
        and _public(metadata.versions[name]) != _public(installed[name])
    ]
    if differences:
        warnings.warn(
            f"{directory} was saved under other package versions ({', '.join(differences)}): "
            "its outputs may differ slightly from those it was validated with",
            stacklevel=3,
        )


def _public(version: str | None) -> str:
    return str(version).split("+", 1)[0]


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot store {type(value).__name__} in bundle metadata")
