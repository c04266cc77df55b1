"""Training configuration: every choice of a run, read from YAML, overridable, written back.

A config file may set any subset of the fields below; the rest keep their defaults. Command-line
overrides use dotted keys (``optim.lr=3e-4``, ``model.name=assignment_cnn``). The resolved config
is written into the run directory, so ``melanoscan train --config RUN_DIR/config.yaml`` repeats
a run exactly.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_args, get_origin, get_type_hints

import yaml

from melanoscan.data.cache import CACHE_MODES
from melanoscan.models.factory import MODEL_NAMES, get_model_spec
from melanoscan.preprocess import COLOUR_CONSTANCY

__all__ = [
    "AugmentationConfig",
    "BalanceConfig",
    "ConfigError",
    "DataConfig",
    "ModelConfig",
    "OptimConfig",
    "TrainConfig",
    "apply_overrides",
    "load_config",
    "parse_override",
    "save_config",
]

BALANCE_STRATEGIES = ("sampler", "weighted_loss", "offline", "none")
OPTIMIZERS = ("adamw", "adam")
# The keys of melanoscan.data.artefacts.ARTEFACTS, copied so the config need not import cv2 and
# albumentations (a test keeps the two equal).
ARTEFACT_NAMES = ("frame", "hair", "ruler", "colour_cast", "blur", "jpeg", "low_resolution")
MONITORS = ("val_balanced_accuracy", "val_accuracy", "val_loss", "val_melanoma_auc")
PRECISIONS = ("auto", "32-true", "bf16-mixed", "16-mixed")
ACCELERATORS = ("auto", "cpu", "gpu", "cuda", "mps", "tpu", "xla", "hpu")
MIN_IMAGE_SIZE = 32
"""Smallest input side: the networks pool or stride their input down 8 to 32 times."""
SEED_LIMIT = 2**32
PROBABILITIES = ("hflip", "vflip", "rotate90", "affine", "colour_jitter", "artefact_probability",
                 "artefact_max_severity")
"""Augmentation keys that are probabilities (or severities) in ``[0, 1]``."""


RENAMED_KEYS = {"augmentation.color_jitter": "augmentation.colour_jitter"}
"""Old dotted key -> its name now: configs and run folders written before still load."""


class ConfigError(ValueError):
    """A config file or override is invalid; the message says which key and why."""


@dataclass
class ModelConfig:
    """Which network to train.

    Args:
        name: a registered model (``melanoscan.models.MODEL_NAMES``).
        pretrained: start from ImageNet weights (models that have them).
        image_size: input side in pixels; ``None`` uses the model's default.
        kwargs: extra constructor arguments (``dropout``, ``drop_connect_rate``, ``batch_norm``).
        colour_constancy: ``none`` or ``shades_of_gray``; recorded in the bundle's
            preprocessing, so every path that uses the model applies it.
    """

    name: str = "efficientnet_lite0"
    pretrained: bool = True
    image_size: int | None = None
    kwargs: dict[str, Any] = field(default_factory=dict)
    colour_constancy: str = "none"


@dataclass
class DataConfig:
    """How the data is split, cleaned and loaded.

    Args:
        val_fraction: share of training candidates held out for validation.
        split_seed: seed of the train/validation split.
        exclude_label_conflicts: keep images with conflicting labels out of training.
        exclude_eval_overlap: keep training images that share content with test out.
        group_near_duplicates: keep near duplicates (pHash) on one side of the split.
        drop_duplicate_copies: train on one copy of an image found in several sources (the
            finest-labelled, then the largest); the others are listed in ``excluded.csv``.
        cache: ``disk`` (resized images kept across runs), ``memory`` or ``none``.
        cache_dir: disk cache location; ``None`` uses ``$XDG_CACHE_HOME/melanoscan``.
        num_workers: DataLoader workers per process; ``None`` sizes them to the machine.
        holdout_sources: sources read with the training data but never trained or validated
            on: their images are an evaluation split, so every copy, lesion or near duplicate
            of them in the other sources is excluded too (leave-one-source-out runs).
        resolve_conflicts_by_authority: where a class folder and an official ground-truth file
            label the same image differently, train on the official label instead of
            excluding the image; every relabelled image is listed in ``relabelled.csv``.
    """

    val_fraction: float = 0.2
    split_seed: int = 0
    exclude_label_conflicts: bool = True
    exclude_eval_overlap: bool = True
    group_near_duplicates: bool = True
    drop_duplicate_copies: bool = True
    cache: str = "disk"
    cache_dir: str | None = None
    num_workers: int | None = None
    holdout_sources: list[str] = field(default_factory=list)
    resolve_conflicts_by_authority: bool = False


@dataclass
class AugmentationConfig:
    """Training augmentation (albumentations); probabilities of 0 switch a transform off.

    Args:
        online: augment training images on the fly each epoch; ``false`` uses the recipe only to
            generate offline copies (``balance.strategy: offline``), as the notebook did.
        hflip: probability of a horizontal flip.
        vflip: probability of a vertical flip.
        rotate90: probability of a random multiple of 90 degrees.
        affine: probability of a shift-scale-rotate.
        shift: largest shift, as a fraction of the side.
        scale: largest zoom in or out, as a fraction.
        rotate: largest rotation in degrees.
        crop_scale_min: random resized crop keeps at least this share of the area (1 = off).
        colour_jitter: probability of a colour jitter (read from ``color_jitter`` too, its
            name before 2026-11-26, so earlier configs and run folders still load).
        brightness: colour jitter brightness strength.
        contrast: colour jitter contrast strength.
        saturation: colour jitter saturation strength.
        hue: colour jitter hue strength.
        artefact_probability: probability of each synthetic acquisition artefact
            (``melanoscan.data.artefacts``: dermatoscope frame, hair, ruler and ink, colour
            cast, blur, JPEG, low resolution), applied independently, every class alike.
        artefacts: which artefacts (default all).
        artefact_max_severity: severities are drawn from ``[0, artefact_max_severity]``.
    """

    online: bool = True
    hflip: float = 0.5
    vflip: float = 0.5
    rotate90: float = 0.5
    affine: float = 0.5
    shift: float = 0.05
    scale: float = 0.1
    rotate: float = 45.0
    crop_scale_min: float = 0.75
    colour_jitter: float = 0.5
    brightness: float = 0.2
    contrast: float = 0.2
    saturation: float = 0.2
    hue: float = 0.02
    artefact_probability: float = 0.0
    artefacts: list[str] = field(default_factory=lambda: list(ARTEFACT_NAMES))
    artefact_max_severity: float = 1.0


@dataclass
class BalanceConfig:
    """How class imbalance is handled.

    Args:
        strategy: ``sampler`` (class-balanced sampling), ``weighted_loss`` (inverse-frequency
            class weights), ``offline`` (the notebook's way: augmented copies of training
            images written to disk up to ``offline_per_class`` per class), or ``none``.
        offline_per_class: target images per class for ``offline``.
        max_class_weight: cap on a class's loss weight for ``weighted_loss`` (uncapped, a class
            of 2 images among thousands dominates the loss).
        sampler_power: for ``sampler``, classes are drawn in proportion to
            ``count ** (1 - sampler_power)``: 1 draws them equally (2 images of a class then fill
            1/9 of every batch), 0.5 by the square root of their size, 0 as they come.
        epoch_samples: for ``sampler``, images drawn per epoch (default: as many as the
            training set holds). Short, comparable runs for ablations on two CPU cores.
    """

    strategy: str = "sampler"
    offline_per_class: int = 500
    max_class_weight: float = 10.0
    sampler_power: float = 1.0
    epoch_samples: int | None = None


@dataclass
class OptimConfig:
    """Optimiser and schedule: linear warmup, then cosine decay to ``min_lr_ratio * lr``.

    Args:
        optimizer: ``adamw`` or ``adam`` (the notebook's choice).
        lr: peak learning rate.
        weight_decay: decoupled weight decay (AdamW) or L2 (Adam).
        warmup_epochs: epochs of linear warmup (fractions allowed).
        min_lr_ratio: final learning rate as a share of ``lr``.
        label_smoothing: cross-entropy label smoothing.
        ema_decay: keep an exponential moving average of the weights (and batch-norm
            statistics) with this decay per step, and validate, select and ship the averaged
            weights; 0 switches it off. 0.998 averages over roughly the last 500 steps.
        ema_start_epoch: the average starts from the weights at the start of this epoch, so
            the first, fast-moving epochs do not weigh on it.
    """

    optimizer: str = "adamw"
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup_epochs: float = 1.0
    min_lr_ratio: float = 0.01
    label_smoothing: float = 0.0
    ema_decay: float = 0.0
    ema_start_epoch: int = 1


@dataclass
class TrainConfig:
    """A complete training run.

    Args:
        model: network choice.
        data: split, cleaning and loading.
        augmentation: training transforms.
        balance: imbalance handling.
        optim: optimiser and schedule.
        epochs: most epochs to train.
        batch_size: images per step and process.
        seed: seed of weights, sampling and augmentation.
        deterministic: ask torch for deterministic kernels (slower).
        early_stopping_patience: epochs without improvement before stopping (0 = never).
        monitor: validation metric for early stopping and the best checkpoint.
        precision: Lightning precision; ``auto`` is 16-bit mixed on GPU, 32-bit on CPU.
        accelerator: Lightning accelerator (``auto``, ``cpu``, ``gpu``).
        devices: devices per node; more than one runs DDP.
        num_nodes: machines; more than one runs DDP across nodes.
        alert_sensitivity: melanoma sensitivity the alert threshold is chosen to reach on the
            validation split at the end of the run.
        channels_last: run convolutions in the channels-last memory layout (faster on CPU:
            see docs/BENCHMARKS.md).
        low_res_epochs: the first this many epochs train on batches downscaled to
            ``low_res_size`` (progressive resizing: cheaper epochs, the last ones at full size).
        low_res_size: input side of the low-resolution epochs.
    """

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    augmentation: AugmentationConfig = field(default_factory=AugmentationConfig)
    balance: BalanceConfig = field(default_factory=BalanceConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    epochs: int = 30
    batch_size: int = 32
    seed: int = 0
    deterministic: bool = False
    early_stopping_patience: int = 6
    monitor: str = "val_balanced_accuracy"
    precision: str = "auto"
    accelerator: str = "auto"
    devices: int = 1
    num_nodes: int = 1
    alert_sensitivity: float = 0.95
    channels_last: bool = True
    low_res_epochs: int = 0
    low_res_size: int = 160

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        aug = self.augmentation
        checks = [
            (
                self.model.name in MODEL_NAMES,
                f"unknown model {self.model.name!r}; known models: {', '.join(MODEL_NAMES)}",
            ),
            (
                self.model.colour_constancy in COLOUR_CONSTANCY,
                f"model.colour_constancy must be one of {COLOUR_CONSTANCY}",
            ),
            (self.model.image_size is None or self.model.image_size >= MIN_IMAGE_SIZE,
             f"model.image_size must be at least {MIN_IMAGE_SIZE} pixels (empty: the model's "
             "default)"),
            (self.epochs >= 1, "epochs must be at least 1"),
            (0 <= self.seed < SEED_LIMIT, f"seed must be in [0, {SEED_LIMIT})"),
            (0 <= self.data.split_seed < SEED_LIMIT,
             f"data.split_seed must be in [0, {SEED_LIMIT})"),
            (self.data.num_workers is None or self.data.num_workers >= 0,
             "data.num_workers must be >= 0 (empty: sized to the machine)"),
            (self.early_stopping_patience >= 0, "early_stopping_patience must be >= 0 (0: never)"),
            (self.optim.warmup_epochs >= 0, "optim.warmup_epochs must be >= 0"),
            (self.optim.weight_decay >= 0, "optim.weight_decay must be >= 0"),
            (0.0 <= self.optim.min_lr_ratio <= 1.0, "optim.min_lr_ratio must be in [0, 1]"),
            (self.accelerator in ACCELERATORS, f"accelerator must be one of {ACCELERATORS}"),
            *((0.0 <= getattr(aug, key) <= 1.0, f"augmentation.{key} must be in [0, 1]")
              for key in PROBABILITIES),
            (0.0 <= aug.shift <= 1.0, "augmentation.shift must be in [0, 1]"),
            (0.0 <= aug.scale < 1.0, "augmentation.scale must be in [0, 1)"),
            (0.0 <= aug.rotate <= 180.0, "augmentation.rotate must be in [0, 180] degrees"),
            *((getattr(aug, key) >= 0, f"augmentation.{key} must be >= 0")
              for key in ("brightness", "contrast", "saturation")),
            (0.0 <= aug.hue <= 0.5, "augmentation.hue must be in [0, 0.5]"),
            (self.batch_size >= 1, "batch_size must be at least 1"),
            (self.devices >= 1 and self.num_nodes >= 1, "devices and num_nodes must be >= 1"),
            (0.0 < self.data.val_fraction < 1.0, "data.val_fraction must be between 0 and 1"),
            (self.data.cache in CACHE_MODES, f"data.cache must be one of {CACHE_MODES}"),
            (
                self.balance.strategy in BALANCE_STRATEGIES,
                f"balance.strategy must be one of {BALANCE_STRATEGIES}",
            ),
            (self.balance.offline_per_class >= 1, "balance.offline_per_class must be >= 1"),
            (self.balance.max_class_weight > 0, "balance.max_class_weight must be > 0"),
            (0 <= self.balance.sampler_power <= 1, "balance.sampler_power must be in [0, 1]"),
            (self.optim.optimizer in OPTIMIZERS, f"optim.optimizer must be one of {OPTIMIZERS}"),
            (self.optim.lr > 0, "optim.lr must be positive"),
            (0.0 <= self.optim.label_smoothing < 1.0, "optim.label_smoothing must be in [0, 1)"),
            (0.0 <= self.optim.ema_decay < 1.0, "optim.ema_decay must be in [0, 1) (0: off)"),
            (self.optim.ema_decay == 0 or 0 <= self.optim.ema_start_epoch < self.epochs,
             "optim.ema_start_epoch must be an epoch of the run (0 to epochs - 1)"),
            (0.0 < aug.crop_scale_min <= 1.0, "augmentation.crop_scale_min must be in (0, 1]"),
            (0.0 < self.alert_sensitivity <= 1.0, "alert_sensitivity must be in (0, 1]"),
            (set(aug.artefacts) <= set(ARTEFACT_NAMES),
             f"augmentation.artefacts must be among {ARTEFACT_NAMES}"),
            (self.monitor in MONITORS, f"monitor must be one of {MONITORS}"),
            (self.precision in PRECISIONS, f"precision must be one of {PRECISIONS}"),
            (self.low_res_epochs >= 0, "low_res_epochs must be >= 0"),
            (self.low_res_epochs == 0 or get_model_spec(self.model.name).any_input_size,
             f"low_res_epochs needs a fully convolutional model; {self.model.name} is built "
             "for one input size"),
            (self.low_res_size >= 32, "low_res_size must be at least 32"),
            (self.balance.epoch_samples is None or self.balance.epoch_samples > 0,
             "balance.epoch_samples must be a positive number of images"),
            (self.balance.epoch_samples is None or self.balance.strategy == "sampler",
             "balance.epoch_samples needs balance.strategy: sampler"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)
        spec = get_model_spec(self.model.name)
        try:
            spec.check_kwargs(self.model.kwargs)
        except ValueError as exc:
            raise ConfigError(f"model.kwargs.{exc}") from None
        if self.model.pretrained and spec.weights_package is None:
            raise ConfigError(f"model.pretrained: {self.model.name} has no pretrained weights; "
                              "set model.pretrained: false (--no-pretrained)")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        return _build(cls, values, prefix="")


def _build(kind: type, values: Any, prefix: str) -> Any:
    if not isinstance(values, dict):
        raise ConfigError(f"{prefix or 'config'} must be a mapping, got {values!r}")
    values = {RENAMED_KEYS.get(f"{prefix}{key}", f"{prefix}{key}").removeprefix(prefix): value
              for key, value in values.items()}
    hints = get_type_hints(kind)
    names = {f.name for f in dataclasses.fields(kind)}
    unknown = sorted(set(values) - names)
    if unknown:
        where = f" in {prefix.rstrip('.')}" if prefix else ""
        raise ConfigError(f"unknown key(s) {unknown}{where}; known: {sorted(names)}")
    built: dict[str, Any] = {}
    for name, value in values.items():
        hint = hints[name]
        if isinstance(hint, type) and dataclasses.is_dataclass(hint):
            built[name] = _build(hint, value, f"{prefix}{name}.")
        else:
            built[name] = _coerce(value, hint, f"{prefix}{name}")
    try:
        return kind(**built)
    except ConfigError:
        raise
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{prefix.rstrip('.') or 'config'}: {exc}") from None


def _coerce(value: Any, hint: Any, key: str) -> Any:
    is_union = get_origin(hint) is not None and get_origin(hint) not in (dict, list)
    options = get_args(hint) if is_union else ()
    if value is None:
        if type(None) in options:
            return None
        raise ConfigError(f"{key} must not be empty")
    target = next((o for o in options if o is not type(None)), hint)
    if get_origin(target) is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key} must be a mapping, got {value!r}")
        return dict(value)
    if get_origin(target) is list:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{key} must be a list of strings, got {value!r}")
        return list(value)
    if target is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key} must be true or false, got {value!r}")
    if target is float and isinstance(value, str) and _looks_numeric(value):
        return float(value)  # YAML 1.1 reads "3e-4" as a string
    if target is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if target is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if target is str and isinstance(value, str):
        return value
    raise ConfigError(f"{key} must be {getattr(target, '__name__', target)}, got {value!r}")


def load_config(path: Path | None) -> TrainConfig:
    """Read a YAML config (``None``: the defaults)."""
    if path is None:
        return TrainConfig()
    try:
        values = yaml.safe_load(Path(path).read_text()) or {}
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"config {path} is not UTF-8 text") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"config {path} is not valid YAML: {exc}") from None
    return TrainConfig.from_dict(values)


def apply_overrides(config: TrainConfig, overrides: dict[str, Any]) -> TrainConfig:
    """A copy of ``config`` with dotted keys replaced (``{"optim.lr": 3e-4}``)."""
    values = config.to_dict()
    for dotted, value in overrides.items():
        *parents, leaf = RENAMED_KEYS.get(dotted, dotted).split(".")
        node = values
        for part in parents:
            if not isinstance(node.get(part), dict):
                raise ConfigError(f"unknown config key {dotted!r}")
            node = node[part]
        if leaf not in node and not (parents and parents[-1] == "kwargs"):
            raise ConfigError(f"unknown config key {dotted!r}")
        node[leaf] = value
    return TrainConfig.from_dict(values)


def parse_override(text: str) -> tuple[str, Any]:
    """``"optim.lr=3e-4"`` → ``("optim.lr", 0.0003)``; the value is read as YAML."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {text!r} must look like key.sub=value")
    return key.strip(), yaml.safe_load(raw) if raw.strip() else None


def _looks_numeric(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def save_config(config: TrainConfig, path: Path) -> None:
    """Write the resolved config as YAML."""
    path.write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
