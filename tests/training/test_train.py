"""End-to-end training runs on tiny generated data: bundle, record, resume, failures."""

from __future__ import annotations

import errno
import re
import signal
import warnings
from collections.abc import Callable
from pathlib import Path

import lightning as L
import numpy as np
import pandas as pd
import pytest
import torch

from melanoscan import load_bundle
from melanoscan.data.images import load_rgb
from melanoscan.inference.predictor import Predictor
from melanoscan.training.config import ConfigError, load_config
from melanoscan.training.datamodule import LesionDataModule
from melanoscan.training.run import TrainingError, TrainingInputError, TrainingInterrupted, train
from tests.conftest import assert_drawn_png
from tests.training.conftest import make_class_folders, tiny_config


def test_run_writes_record_and_a_bundle_that_predicts(tiny_data: Path, tmp_path: Path) -> None:
    config = tiny_config()
    result = train([tiny_data], tmp_path / "run", config, show_progress=False)
    run = result.run_dir
    for name in ("config.yaml", "split.csv", "excluded.csv", "skipped.csv", "metrics.csv",
                 "training_curves.png", "confusion_matrix_val.png",
                 "validation_predictions.csv", "checkpoints/best.ckpt", "checkpoints/last.ckpt"):
        assert (run / name).exists(), name
    assert_drawn_png(run / "training_curves.png", size=(1000, 400))
    assert_drawn_png(run / "confusion_matrix_val.png")
    assert load_config(run / "config.yaml") == config
    metrics = pd.read_csv(run / "metrics.csv")
    assert list(metrics["epoch"]) == [0, 1]
    assert metrics[["train_loss", "val_loss", "train_images_per_s"]].notna().all().all()

    bundle = load_bundle(result.bundle_dir)
    split = pd.read_csv(run / "split.csv")
    used = split[split["split"].isin(["train", "val"])]
    assert set(bundle.training_images()["content_hash"]) == set(used["content_hash"])
    assert bundle.metadata.training["counts"]["val"]
    assert bundle.metadata.validation_metrics["images"] == (split["split"] == "val").sum()

    val = split[split["split"] == "val"]
    images = [load_rgb(p) for p in val["path"]]
    probabilities = Predictor(result.bundle_dir).probabilities(images)
    assert probabilities.shape == (len(val), 9)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
    saved = pd.read_csv(run / "validation_predictions.csv")
    np.testing.assert_allclose(saved[bundle.classes].to_numpy(), probabilities, atol=1e-5)

    # Calibrated on the validation split: the alert reaches the target sensitivity there.
    calibration = bundle.metadata.calibration
    assert calibration["temperature"] > 0 and calibration["target_sensitivity"] == 0.95
    melanoma = (saved["label"] == "melanoma").to_numpy()
    assert melanoma.any()
    alerts = saved["melanoma"].to_numpy() >= calibration["alert_threshold"]
    assert alerts[melanoma].mean() >= 0.95


@pytest.mark.parametrize("colour_constancy", ["none", "shades_of_gray"])
def test_validation_input_equals_prediction_input(
    tiny_data: Path, tmp_path: Path, colour_constancy: str
) -> None:
    config = tiny_config(epochs=1, **{"model.colour_constancy": colour_constancy})
    result = train([tiny_data], tmp_path / "run", config, show_progress=False)
    bundle = load_bundle(result.bundle_dir)
    assert bundle.preprocessing.colour_constancy == colour_constancy
    split = pd.read_csv(result.run_dir / "split.csv")
    datamodule = LesionDataModule(split, bundle.preprocessing, tiny_config())
    image, _, _, ok = datamodule.val_set[0]
    expected = bundle.preprocessing(load_rgb(datamodule.val_set.paths[0]))
    assert ok
    np.testing.assert_array_equal(image.numpy(), expected)


class _InterruptAtEpoch(L.Callback):
    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.current_epoch == self.epoch:
            raise KeyboardInterrupt


class _RecordIndices(L.Callback):
    """The dataset indices each epoch trains on, in order."""

    def __init__(self) -> None:
        self.epochs: dict[int, list[int]] = {}

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule,
                             batch, batch_idx: int) -> None:  # type: ignore[no-untyped-def]
        self.epochs.setdefault(trainer.current_epoch, []).extend(batch[2].tolist())


def test_interrupted_run_resumes_with_the_same_draws(tiny_data: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    before, after, uninterrupted = _RecordIndices(), _RecordIndices(), _RecordIndices()
    try:
        with pytest.raises(TrainingInterrupted, match="resume with: melanoscan train"):
            train([tiny_data], run, tiny_config(epochs=3), show_progress=False,
                  callbacks=[before, _InterruptAtEpoch(2)])
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)  # Lightning ignores SIGINT after
    assert list(pd.read_csv(run / "metrics.csv")["epoch"]) == [0, 1]
    assert not (run / "bundle").exists()
    result = train(None, run, resume=True, show_progress=False, callbacks=[after])
    assert list(pd.read_csv(run / "metrics.csv")["epoch"]) == [0, 1, 2]
    assert load_bundle(result.bundle_dir).metadata.training["config"]["epochs"] == 3

    train([tiny_data], tmp_path / "whole", tiny_config(epochs=3), show_progress=False,
          callbacks=[uninterrupted])
    assert list(after.epochs) == [2]
    assert {**before.epochs, **after.epochs} == uninterrupted.epochs
    assert uninterrupted.epochs[2] != uninterrupted.epochs[0]  # each epoch draws anew


def _disk_full_at(monkeypatch: pytest.MonkeyPatch, full: Callable[[Path], bool]) -> None:
    """Writes of files that ``full`` picks get half-way, then find the disk full."""
    original = Path.write_bytes

    def write_bytes(path: Path, data) -> int:  # type: ignore[no-untyped-def]
        if full(path):
            original(path, bytes(memoryview(data)[: len(memoryview(data)) // 2]))
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return original(path, data)

    monkeypatch.setattr(Path, "write_bytes", write_bytes)


def test_full_disk_at_checkpoint_keeps_the_last_good_one_and_resumes(
    tiny_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    writes: list[Path] = []

    def after_epoch_0(path: Path) -> bool:
        if "last.ckpt" in path.name:
            writes.append(path)
        return len(writes) > 1  # epoch 0's last.ckpt is written; then the disk is full

    _disk_full_at(monkeypatch, after_epoch_0)
    run = tmp_path / "run"
    with pytest.raises(TrainingError) as failure:
        train([tiny_data], run, tiny_config(), show_progress=False)
    message = str(failure.value)
    assert re.match(rf"could not write to {re.escape(str(run))}: No space left on device; "
                    r".*resume with: melanoscan train", message), message
    assert ".tmp" not in message
    monkeypatch.undo()
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)["epoch"] == 0
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["best.ckpt", "last.ckpt"]
    result = train(None, run, resume=True, show_progress=False)
    assert list(pd.read_csv(run / "metrics.csv")["epoch"]) == [0, 1]
    assert result.bundle_dir is not None and (result.bundle_dir / "weights.pt").exists()


def test_full_disk_at_the_bundle_leaves_no_bundle_and_resumes(
    tiny_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _disk_full_at(monkeypatch, lambda path: ".weights.pt." in path.name)
    run = tmp_path / "run"
    with pytest.raises(TrainingError, match=rf"could not write the validation record and "
                       rf"bundle to {re.escape(str(run))}: No space left on device; .*resume with"):
        train([tiny_data], run, tiny_config(epochs=1), show_progress=False)
    assert sorted(p.name for p in run.iterdir() if "bundle" in p.name) == []
    monkeypatch.undo()
    result = train(None, run, resume=True, show_progress=False)
    assert list(pd.read_csv(run / "metrics.csv")["epoch"]) == [0]  # nothing trained again
    assert load_bundle(result.bundle_dir).metadata.validation_metrics["best_epoch"] == 0


def test_a_run_stopped_before_its_first_checkpoint_starts_over(
    tiny_data: Path, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    one_class = make_class_folders(tmp_path / "one_class", 6, ("melanoma",))
    with pytest.raises(TrainingInputError, match="at least two classes"):
        train([one_class], run, tiny_config(epochs=1), show_progress=False)
    try:
        with pytest.raises(TrainingInterrupted) as interrupted:
            train([tiny_data], run, tiny_config(epochs=1), show_progress=False,
                  callbacks=[_InterruptAtEpoch(0)])
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    assert "--resume" not in str(interrupted.value)
    assert "run the same command again to start over" in str(interrupted.value)
    result = train([tiny_data], run, tiny_config(epochs=1), show_progress=False)
    assert list(pd.read_csv(run / "metrics.csv")["epoch"]) == [0]
    assert load_bundle(result.bundle_dir).metadata.training["config"]["epochs"] == 1


class _DeleteImages(L.Callback):
    """Deletes the first training and the first validation image once training starts."""

    def __init__(self) -> None:
        self.deleted: list[str] = []

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        for dataset in (trainer.datamodule.train_set, trainer.datamodule.val_set):
            self.deleted.append(str(dataset.paths[0]))
            Path(dataset.paths[0]).unlink()


def test_unreadable_images_mid_run_are_skipped_and_reported_once(
    tiny_data: Path, tmp_path: Path
) -> None:
    (tiny_data / "nevus" / "broken.png").write_bytes(b"not an image")
    deleted, notes = _DeleteImages(), []
    # No cache, and plain shuffling so that every image is read in every epoch.
    config = tiny_config(**{"data.cache": "none", "balance.strategy": "none"})
    result = train([tiny_data], tmp_path / "run", config, show_progress=False,
                   callbacks=[deleted], report=notes.append)
    skipped = tmp_path / "run" / "skipped.csv"
    assert notes[0] == f"1 file(s) skipped as unreadable or unusable: listed in {skipped}"
    assert sorted(notes[1:]) == sorted(
        f"skipping unreadable image {path}: file not found; it is left out of every batch "
        "from now on" for path in deleted.deleted)  # once each, over 2 epochs
    assert result.validation_metrics["unreadable_during_training"] == sorted(deleted.deleted)
    assert (result.bundle_dir / "weights.pt").exists()


def test_existing_run_is_not_overwritten(tiny_data: Path, tmp_path: Path) -> None:
    filters = list(warnings.filters)
    train([tiny_data], tmp_path / "run", tiny_config(epochs=1), show_progress=False)
    assert warnings.filters == filters  # a run leaves the process's warning filters alone
    with pytest.raises(TrainingInputError, match="already holds a run"):
        train([tiny_data], tmp_path / "run", tiny_config(epochs=1), show_progress=False)


def test_nothing_to_resume(tmp_path: Path) -> None:
    filters = list(warnings.filters)
    with pytest.raises(TrainingInputError, match="nothing to resume"):
        train(None, tmp_path / "run", resume=True, show_progress=False)
    assert warnings.filters == filters


@pytest.mark.parametrize(
    ("classes", "per_class", "message"),
    [
        (("melanoma",), 6, "at least two classes"),
        ((), 0, "no readable image"),
    ],
    ids=["one-class", "no-images"],
)
def test_unusable_data(tmp_path: Path, classes, per_class: int, message: str) -> None:
    data = make_class_folders(tmp_path / "data", per_class, classes)
    data.mkdir(exist_ok=True)
    (data / "nevus").mkdir(exist_ok=True)
    (data / "nevus" / "broken.jpg").write_bytes(b"not an image")
    with pytest.raises(TrainingInputError, match=message):
        train([data], tmp_path / "run", tiny_config(), show_progress=False)


def test_class_with_a_single_image_warns(tmp_path: Path) -> None:
    data = make_class_folders(tmp_path / "data", 6, ("melanoma", "nevus"))
    make_class_folders(tmp_path / "data", 1, ("dermatofibroma",), seed=1000)
    result = train([data], tmp_path / "run", tiny_config(epochs=1), show_progress=False)
    assert any("'dermatofibroma'" in w for w in result.warnings)


def test_class_lost_to_exclusions_warns(tmp_path: Path) -> None:
    data = make_class_folders(tmp_path / "data", 6, ("melanoma", "nevus"))
    copy = make_class_folders(tmp_path / "copy", 1, ("dermatofibroma",))  # = melanoma_0's pixels
    result = train([data, copy], tmp_path / "run", tiny_config(epochs=1), show_progress=False)
    assert any("'dermatofibroma': all 1 image(s) excluded" in w for w in result.warnings)


def test_offline_augmentation_touches_training_split_only(tiny_data: Path, tmp_path: Path) -> None:
    config = tiny_config(epochs=1, **{"balance.strategy": "offline",
                                      "balance.offline_per_class": 10})
    result = train([tiny_data], tmp_path / "run", config, show_progress=False)
    split = pd.read_csv(result.run_dir / "split.csv")
    augmented = split[split["source"] == "offline_augmentation"]
    assert len(augmented) > 0 and set(augmented["split"]) == {"train"}
    assert split[split["split"] == "train"]["label"].value_counts().min() >= 10
    val_paths = set(split.loc[split["split"] == "val", "path"])
    assert not set(augmented["augmented_from"]) & val_paths


def test_generalisation_recipe_keys_run_end_to_end(tiny_data: Path, tmp_path: Path) -> None:
    # What configs/lite0_generalise_224.yaml switches on, on the tiny model: artefact
    # augmentation, bf16 autocast, the best checkpoint by validation melanoma AUC.
    config = tiny_config(**{"augmentation.artefact_probability": 1.0,
                            "monitor": "val_melanoma_auc", "precision": "bf16-mixed"})
    result = train([tiny_data], tmp_path / "run", config, show_progress=False)
    metrics = pd.read_csv(result.run_dir / "metrics.csv")
    assert metrics["val_melanoma_auc"].between(0, 1).all()
    best = int(metrics["val_melanoma_auc"].idxmax())
    assert result.validation_metrics["best_epoch"] == int(metrics["epoch"][best])
    assert load_bundle(result.bundle_dir).metadata.training["config"]["precision"] == "bf16-mixed"


def test_holdout_source_is_never_trained_or_validated_on(tiny_data: Path, tmp_path: Path) -> None:
    # The held-out source shares one image (same pixels) with the training data.
    holdout = make_class_folders(tmp_path / "holdout", 3, ("melanoma", "nevus"), seed=9000)
    shared = tiny_data / "nevus" / "nevus_0.png"
    (holdout / "nevus" / "copy_of_nevus_0.png").write_bytes(shared.read_bytes())
    config = tiny_config(epochs=1, **{"data.holdout_sources": [str(holdout)]})
    result = train([tiny_data], tmp_path / "run", config, show_progress=False)
    split = pd.read_csv(result.run_dir / "split.csv")
    used = split[split["split"].isin(["train", "val"])]
    assert not used["path"].str.startswith(str(holdout)).any()
    assert str(shared) not in set(used["path"])
    trained = set(load_bundle(result.bundle_dir).training_images()["content_hash"])
    held = split[split["path"].str.startswith(str(holdout))]
    assert len(held) == 7 and not trained & set(held["content_hash"])


def test_weight_average_is_what_is_validated_and_shipped(tiny_data: Path, tmp_path: Path) -> None:
    config = tiny_config(**{"epochs": 3, "optim.ema_decay": 0.9, "optim.ema_start_epoch": 1})
    result = train([tiny_data], tmp_path / "run", config, show_progress=False)
    last = torch.load(result.run_dir / "checkpoints/last.ckpt", map_location="cpu",
                      weights_only=False)
    averaged, current = last["state_dict"], last["current_model_state"]
    assert averaged.keys() == current.keys()
    # The average lags the training weights, so the two differ after a step of training.
    assert any(not torch.equal(averaged[k], current[k]) for k in averaged)

    best = torch.load(result.run_dir / "checkpoints/best.ckpt", map_location="cpu",
                      weights_only=False)
    shipped = torch.load(result.bundle_dir / "weights.pt", map_location="cpu", weights_only=True)
    for name, value in shipped.items():
        torch.testing.assert_close(value, best["state_dict"][f"model.{name}"])


def test_weight_average_starts_at_its_epoch(tiny_data: Path, tmp_path: Path) -> None:
    from melanoscan.training.callbacks import WeightAverage

    seen: list[tuple[int, bool, int]] = []

    class Watch(L.Callback):
        def on_validation_epoch_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
            if trainer.sanity_checking:
                return
            average = next(c for c in trainer.callbacks if isinstance(c, WeightAverage))
            steps = trainer.num_training_batches
            seen.append((trainer.current_epoch, average.started, steps))

    config = tiny_config(**{"epochs": 3, "optim.ema_decay": 0.9, "optim.ema_start_epoch": 1})
    result = train([tiny_data], tmp_path / "run", config, show_progress=False,
                   callbacks=[Watch()])
    assert [(epoch, started) for epoch, started, _ in seen] == [(0, False), (1, True), (2, True)]
    last = torch.load(result.run_dir / "checkpoints/last.ckpt", map_location="cpu",
                      weights_only=False)
    # One update per step of epochs 1 and 2, none from epoch 0.
    assert int(last["averaging_state"]["n_averaged"]) == 2 * seen[0][2]
    metrics = pd.read_csv(result.run_dir / "metrics.csv")
    epoch_0 = torch.load(tmp_path / "run/checkpoints/best.ckpt", map_location="cpu",
                         weights_only=False)
    if int(metrics["val_balanced_accuracy"].idxmax()) == 0:  # selected before the average
        assert "current_model_state" not in epoch_0


def test_weight_average_settings_are_checked() -> None:
    with pytest.raises(ConfigError, match=r"optim\.ema_decay"):
        tiny_config(**{"optim.ema_decay": 1.0})
    with pytest.raises(ConfigError, match=r"optim\.ema_start_epoch"):
        tiny_config(**{"optim.ema_decay": 0.99, "optim.ema_start_epoch": 2})
