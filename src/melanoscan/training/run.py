"""One training run, end to end: data → Lightning fit → validation record → model bundle.

A run directory holds::

    config.yaml  run.json  split.csv  excluded.csv  skipped.csv  data_summary.json
    metrics.csv  training_curves.png  confusion_matrix_val.png  validation_predictions.csv
    checkpoints/{best,last}.ckpt  bundle/
"""

from __future__ import annotations

import json
import os
import shutil
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint

from melanoscan import taxonomy
from melanoscan.bundle import BundleMetadata, save_bundle, staged_directory
from melanoscan.data.dataset import inverse_frequency_weights
from melanoscan.evaluation.gate_fit import fit_training_gate
from melanoscan.models.factory import create_model, get_model_spec
from melanoscan.preprocess import Preprocessing
from melanoscan.training.callbacks import EpochRecorder, UnreadableImages, WeightAverage
from melanoscan.training.checkpoints import AtomicCheckpointIO, checkpoint_problem
from melanoscan.training.config import ConfigError, TrainConfig, load_config, save_config
from melanoscan.training.datamodule import LesionDataModule
from melanoscan.training.errors import TrainingError, TrainingInputError, TrainingInterrupted
from melanoscan.training.module import LesionClassifier
from melanoscan.training.prepare import (
    EXCLUDED_FILE,
    OFFLINE_DIR,
    RELABELLED_FILE,
    SKIPPED_FILE,
    SPLIT_FILE,
    SUMMARY_FILE,
    PreparedData,
    data_notes,
    prepare_data,
    read_prepared,
)
from melanoscan.training.validation import validation_record

__all__ = [
    "TrainResult",
    "TrainingError",
    "TrainingInputError",
    "TrainingInterrupted",
    "train",
]

CONFIG_FILE = "config.yaml"
RUN_FILE = "run.json"
CHECKPOINT_DIR = "checkpoints"
LAST_CHECKPOINT = f"{CHECKPOINT_DIR}/last.ckpt"
BUNDLE_DIR = "bundle"
# What an attempt writes before its first checkpoint; removed when that attempt is restarted.
ATTEMPT_FILES = (CONFIG_FILE, RUN_FILE, SPLIT_FILE, EXCLUDED_FILE, SKIPPED_FILE,
                 RELABELLED_FILE, SUMMARY_FILE, "metrics.csv", "training_curves.png",
                 "confusion_matrix_val.png", "validation_predictions.csv")
FREE_SPACE = "free space (or fix permissions) and "


@dataclass
class TrainResult:
    """What a finished run produced.

    Args:
        run_dir: the run directory.
        bundle_dir: the model bundle (``None`` on processes other than the first).
        validation_metrics: figures of the best checkpoint on the validation split.
        warnings: data problems that did not stop training.
    """

    run_dir: Path
    bundle_dir: Path | None
    validation_metrics: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


def is_primary_process() -> bool:
    """True outside DDP and on global rank 0 (Lightning sets these for the processes it starts)."""
    return os.environ.get("LOCAL_RANK", "0") == "0" and os.environ.get("NODE_RANK", "0") == "0"


def resume_hint(run_dir: Path) -> str:
    return f"resume with: melanoscan train --out {run_dir} --resume"


def next_step(run_dir: Path, fix: str = "") -> str:
    """What to do after a failure: resume if an epoch was saved, otherwise start over."""
    if (run_dir / LAST_CHECKPOINT).exists():
        return (f"checkpoints of completed epochs are kept in {run_dir / CHECKPOINT_DIR}; "
                f"{fix}{resume_hint(run_dir)}")
    return f"no epoch was completed; {fix}run the same command again to start over"


def _warn(message: str) -> None:
    warnings.warn(message, stacklevel=3)


def train(
    data: Sequence[Path] | None,
    run_dir: Path,
    config: TrainConfig | None = None,
    *,
    resume: bool = False,
    show_progress: bool = True,
    callbacks: Sequence[L.Callback] = (),
    report: Callable[[str], None] | None = None,
) -> TrainResult:
    """Train a model on ``data`` into ``run_dir`` (or resume the run there).

    Args:
        data: data sources; on resume ``None`` uses the run's own.
        run_dir: where everything is written.
        config: the run's settings (default :class:`TrainConfig`); ignored on resume.
        resume: continue from ``run_dir``'s last checkpoint with its saved config and split.
        show_progress: progress bars.
        callbacks: extra Lightning callbacks.
        report: receives one-line notes as they arise: what data preparation skipped, excluded
            or relabelled (with the file listing them), and each image that turns out
            unreadable mid-run (once); default: :func:`warnings.warn`.

    Raises:
        TrainingError: bad data, an existing run without ``resume``, a failed write (full disk),
            or an interruption (:class:`TrainingInterrupted`).
    """
    with warnings.catch_warnings():  # the filters last as long as the run, not the process
        # Lightning 2.6 calls a torch pytree API that torch 2.13 deprecates: nothing to do.
        warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")
        if resume:
            warnings.filterwarnings("ignore", message=r"Checkpoint directory .* is not empty")
        return _train(data, Path(run_dir), config, resume, show_progress, callbacks, report)


def _train(
    data: Sequence[Path] | None,
    run_dir: Path,
    config: TrainConfig | None,
    resume: bool,
    show_progress: bool,
    callbacks: Sequence[L.Callback],
    report: Callable[[str], None] | None,
) -> TrainResult:
    primary = is_primary_process()
    if resume:
        config, data = _resumed_run(run_dir, data)
    else:
        config = config or TrainConfig()
        if primary:
            _start_run(run_dir, config, data)
    preprocessing = Preprocessing.for_model(
        config.model.name, config.model.image_size, config.model.colour_constancy
    )
    report = report or _warn
    prepared = _prepared(data, config, preprocessing, run_dir, primary and not resume,
                         show_progress)
    if primary:
        for line in data_notes(run_dir, prepared.summary):
            report(line)
    L.seed_everything(config.seed, workers=True, verbose=False)
    datamodule = LesionDataModule(prepared.table, preprocessing, config)
    module = _build_module(config, preprocessing, datamodule)
    checkpoint = ModelCheckpoint(
        dirpath=run_dir / CHECKPOINT_DIR, filename="best", monitor=config.monitor,
        mode=_mode(config.monitor), enable_version_counter=False,
    )
    # Lightning's own save_last only writes when the best improves; resuming needs every epoch.
    latest = ModelCheckpoint(
        dirpath=run_dir / CHECKPOINT_DIR, filename="last", monitor=None, save_top_k=1,
        enable_version_counter=False,
    )
    unreadable = UnreadableImages(report)
    trainer = _trainer(config, run_dir, show_progress, [
        checkpoint, latest, *_stopping(config), *_averaging(config), EpochRecorder(run_dir),
        unreadable, *callbacks,
    ])
    ckpt_path = run_dir / LAST_CHECKPOINT if resume else None
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
    except SystemExit:
        # Lightning turns Ctrl-C into a graceful shutdown followed by sys.exit(1).
        raise TrainingInterrupted(f"training interrupted; {next_step(run_dir)}") from None
    except OSError as exc:
        # Named by the run folder: the failed file is a temporary one, gone by now.
        raise TrainingError(
            f"could not write to {run_dir}: {exc.strerror or exc}; "
            f"{next_step(run_dir, FREE_SPACE)}"
        ) from None
    if not trainer.is_global_zero:
        return TrainResult(run_dir, None, warnings=prepared.warnings)
    best = checkpoint.best_model_path or str(run_dir / LAST_CHECKPOINT)
    try:
        return _finish(run_dir, config, preprocessing, prepared, module, datamodule,
                       Path(best), sorted(unreadable.paths))
    except OSError as exc:
        raise TrainingError(
            f"could not write the validation record and bundle to {run_dir}: "
            f"{exc.strerror or exc}; {next_step(run_dir, FREE_SPACE)}"
        ) from None


def _finish(
    run_dir: Path,
    config: TrainConfig,
    preprocessing: Preprocessing,
    prepared: PreparedData,
    module: LesionClassifier,
    datamodule: LesionDataModule,
    best: Path,
    unreadable: list[str],
) -> TrainResult:
    """Best checkpoint → validation record and calibration → bundle (first process only)."""
    checkpoint = torch.load(best, map_location="cpu", weights_only=False)  # our own file
    module.load_state_dict(checkpoint["state_dict"])
    metrics, calibration = validation_record(module.model.cpu().eval(), datamodule, run_dir)
    metrics["best_epoch"] = int(checkpoint["epoch"])
    metrics["unreadable_during_training"] = unreadable
    bundle_dir = _write_bundle(run_dir, config, preprocessing, prepared, module, metrics,
                               calibration)
    return TrainResult(run_dir, bundle_dir, metrics, prepared.warnings)


def _start_run(run_dir: Path, config: TrainConfig, data: Sequence[Path] | None) -> None:
    if not data:
        raise TrainingInputError("no data source given (--data)")
    if (run_dir / LAST_CHECKPOINT).exists():
        raise TrainingInputError(
            f"{run_dir} already holds a run; pick a new --out, or {resume_hint(run_dir)}"
        )
    if (run_dir / BUNDLE_DIR).exists():
        raise TrainingInputError(f"{run_dir} already holds a model bundle; pick a new --out")
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        if (run_dir / CONFIG_FILE).exists():
            _clear_attempt(run_dir)
        save_config(config, run_dir / CONFIG_FILE)
        (run_dir / RUN_FILE).write_text(json.dumps({"data": [str(d) for d in data]}) + "\n")
    except OSError as exc:
        raise TrainingError(f"cannot write to {run_dir}: {exc.strerror or exc}") from None


def _clear_attempt(run_dir: Path) -> None:
    """Remove what an attempt that never saved a checkpoint left (a failure or Ctrl-C during
    data preparation or the first epoch), so that the same command starts it over."""
    for name in ATTEMPT_FILES:
        (run_dir / name).unlink(missing_ok=True)
    for name in (CHECKPOINT_DIR, OFFLINE_DIR):
        shutil.rmtree(run_dir / name, ignore_errors=True)


def _resumed_run(
    run_dir: Path, data: Sequence[Path] | None
) -> tuple[TrainConfig, list[Path]]:
    if not (run_dir / LAST_CHECKPOINT).exists():
        raise TrainingInputError(
            f"nothing to resume in {run_dir}: {LAST_CHECKPOINT} is missing (a run writes it "
            "at the end of its first epoch); run the original command again to start over"
        )
    try:
        config = load_config(run_dir / CONFIG_FILE)
        saved = [Path(d) for d in json.loads((run_dir / RUN_FILE).read_text())["data"]]
    except (ConfigError, OSError, ValueError, KeyError) as exc:
        raise TrainingInputError(f"cannot resume {run_dir}: {exc}") from None
    problem = checkpoint_problem(run_dir / LAST_CHECKPOINT)
    if problem:
        raise TrainingInputError(
            f"cannot resume {run_dir}: {LAST_CHECKPOINT} is damaged ({problem}); pick a new "
            f"--out, or delete {run_dir / CHECKPOINT_DIR} and run the original command again "
            "to start over"
        )
    if data and [str(d) for d in data] != [str(d) for d in saved]:
        raise TrainingInputError(f"{run_dir} was trained on {saved}; resume it with the same data")
    return config, saved


def _prepared(
    data: Sequence[Path] | None,
    config: TrainConfig,
    preprocessing: Preprocessing,
    run_dir: Path,
    fresh: bool,
    show_progress: bool,
) -> PreparedData:
    try:
        if fresh:
            return prepare_data(list(data or []), config, preprocessing, run_dir,
                                show_progress=show_progress)
        return read_prepared(run_dir)
    except OSError as exc:
        raise TrainingError(
            f"could not prepare the data in {run_dir}: {exc.strerror or exc}; "
            f"{next_step(run_dir, FREE_SPACE)}"
        ) from None
    except KeyboardInterrupt:
        raise TrainingInterrupted(
            f"interrupted while preparing the data; {next_step(run_dir)}"
        ) from None


def model_kwargs(config: TrainConfig, preprocessing: Preprocessing) -> dict[str, Any]:
    """The constructor arguments of the run's model (recorded in the bundle)."""
    spec = get_model_spec(config.model.name)
    return spec.constructor_kwargs(preprocessing.image_size, config.model.kwargs)


def _build_module(
    config: TrainConfig, preprocessing: Preprocessing, datamodule: LesionDataModule
) -> LesionClassifier:
    num_classes = len(taxonomy.CLASSES)
    model = create_model(config.model.name, num_classes, pretrained=config.model.pretrained,
                         **model_kwargs(config, preprocessing))
    weights = None
    if config.balance.strategy == "weighted_loss":
        weights = inverse_frequency_weights(datamodule.train_set.labels, num_classes,
                                            max_weight=config.balance.max_class_weight)
    return LesionClassifier(
        model, num_classes, config.optim, class_weights=weights,
        channels_last=config.channels_last,
        melanoma_index=taxonomy.CLASSES.index(taxonomy.MELANOMA),
        low_res_epochs=config.low_res_epochs, low_res_size=config.low_res_size,
    )


def _mode(monitor: str) -> str:
    return "min" if "loss" in monitor else "max"


def _stopping(config: TrainConfig) -> list[L.Callback]:
    if config.early_stopping_patience <= 0:
        return []
    return [EarlyStopping(monitor=config.monitor, mode=_mode(config.monitor),
                          patience=config.early_stopping_patience)]


def _averaging(config: TrainConfig) -> list[L.Callback]:
    # Once the average has started, checkpoints hold it (the training weights ride along for
    # resume), so validation, best.ckpt and the bundle all see the average.
    if config.optim.ema_decay <= 0:
        return []
    return [WeightAverage(config.optim.ema_decay, config.optim.ema_start_epoch)]


def _trainer(
    config: TrainConfig, run_dir: Path, show_progress: bool, callbacks: list[L.Callback]
) -> L.Trainer:
    distributed = config.devices * config.num_nodes > 1
    precision = config.precision
    if precision == "auto":
        precision = "16-mixed" if torch.cuda.is_available() and config.accelerator != "cpu" else (
            "32-true")
    return L.Trainer(
        max_epochs=config.epochs,
        accelerator=config.accelerator,
        devices=config.devices,
        num_nodes=config.num_nodes,
        strategy="ddp" if distributed else "auto",
        precision=precision,  # type: ignore[arg-type]
        deterministic=config.deterministic,
        callbacks=callbacks,
        logger=False,
        default_root_dir=run_dir,
        enable_progress_bar=show_progress,
        enable_model_summary=False,
        log_every_n_steps=10,
        plugins=[AtomicCheckpointIO()],
    )


def _write_bundle(
    run_dir: Path,
    config: TrainConfig,
    preprocessing: Preprocessing,
    prepared: PreparedData,
    module: LesionClassifier,
    metrics: dict[str, Any],
    calibration: dict[str, Any],
) -> Path:
    training = dict(prepared.summary)
    training["config"] = config.to_dict()
    training["best_epoch"] = metrics.get("best_epoch")
    metadata = BundleMetadata(
        name=f"{config.model.name}-{run_dir.name}",
        classes=list(taxonomy.CLASSES),
        architecture={"name": config.model.name, "kwargs": model_kwargs(config, preprocessing)},
        preprocessing=preprocessing.to_dict(),
        training=training,
        validation_metrics=metrics,
        calibration=calibration,
    )
    table = prepared.table
    used = table[table["split"].isin(["train", "val"])]
    # Built beside and renamed into place: a failure (full disk) leaves no partial bundle.
    with staged_directory(run_dir / BUNDLE_DIR) as staging:
        save_bundle(staging, module.model, metadata, training_images=used)
        fit_training_gate(staging, table, run_dir.name, show_progress=False)
    return run_dir / BUNDLE_DIR

