"""Training config: YAML round trip, overrides, and clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from melanoscan.training.config import (
    ConfigError,
    TrainConfig,
    apply_overrides,
    load_config,
    parse_override,
    save_config,
)

CONFIGS = Path(__file__).parents[2] / "configs"


def test_round_trip_keeps_every_field(tmp_path: Path) -> None:
    config = apply_overrides(
        TrainConfig(),
        {"model.name": "assignment_cnn", "model.pretrained": False, "optim.lr": 3e-4,
         "model.kwargs.dropout": 0.3, "augmentation.hflip": 0.0, "epochs": 3},
    )
    path = tmp_path / "config.yaml"
    save_config(config, path)
    assert load_config(path) == config
    assert load_config(path).model.kwargs == {"dropout": 0.3}


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_committed_configs_load(path: Path) -> None:
    config = load_config(path)
    assert config.model.name in {"assignment_cnn", "efficientnet_lite0"}


def test_partial_file_keeps_defaults(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("epochs: 2\noptim:\n  lr: 3e-4\n")
    config = load_config(path)
    assert (config.epochs, config.optim.lr) == (2, 3e-4)
    assert config.batch_size == TrainConfig().batch_size


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("epoch: 3\n", r"unknown key\(s\) \['epoch'\]"),
        ("optim:\n  lrate: 1\n", r"unknown key\(s\) \['lrate'\] in optim"),
        ("epochs: many\n", "epochs must be int"),
        ("model:\n  pretrained: 3\n", "model.pretrained must be true or false"),
        ("balance:\n  strategy: smote\n", "balance.strategy must be one of"),
        ("epochs: 0\n", "epochs must be at least 1"),
        ("monitor: train_loss\n", "monitor must be one of"),
        ("monitor: val_auc\n", "monitor must be one of"),
        ("precision: bf16\n", "precision must be one of"),
        ("augmentation:\n  artefact_probability: 1.5\n",
         r"augmentation.artefact_probability must be in \[0, 1\]"),
        ("augmentation:\n  artefact_probability: -0.1\n",
         r"augmentation.artefact_probability must be in \[0, 1\]"),
        ("augmentation:\n  artefact_max_severity: 2\n",
         r"augmentation.artefact_max_severity must be in \[0, 1\]"),
        ("augmentation:\n  artefacts: [hair, smudge]\n", "augmentation.artefacts must be among"),
        ("augmentation:\n  artefacts: hair\n",
         "augmentation.artefacts must be a list of strings"),
        ("augmentation:\n  artefacts: [1, 2]\n",
         "augmentation.artefacts must be a list of strings"),
        ("data:\n  holdout_sources: ../shared/data/isic2017\n",
         "data.holdout_sources must be a list of strings"),
        ("data:\n  resolve_conflicts_by_authority: yes please\n",
         "data.resolve_conflicts_by_authority must be true or false"),
        ("low_res_epochs: -1\n", "low_res_epochs must be >= 0"),
        ("low_res_size: 16\n", "low_res_size must be at least 32"),
        ("balance:\n  sampler_power: 2\n", "balance.sampler_power must be in \\[0, 1\\]"),
        ("model:\n  colour_constancy: grey_world\n", "model.colour_constancy must be one of"),
        ("balance:\n  max_class_weight: 0\n", "balance.max_class_weight must be > 0"),
        ("- 1\n- 2\n", "config must be a mapping"),
        ("epochs: [1\n", "not valid YAML"),
    ],
)
def test_bad_config_is_named(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_config(path)


def test_missing_file() -> None:
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config(Path("/nonexistent/config.yaml"))


def test_overrides() -> None:
    assert parse_override("optim.lr=3e-4") == ("optim.lr", "3e-4")
    assert parse_override("model.pretrained=false") == ("model.pretrained", False)
    assert apply_overrides(TrainConfig(), dict([parse_override("optim.lr=3e-4")])).optim.lr == 3e-4
    with pytest.raises(ConfigError, match=r"unknown config key 'optim\.nope'"):
        apply_overrides(TrainConfig(), {"optim.nope": 1})
    with pytest.raises(ConfigError, match="must look like"):
        parse_override("epochs")


def test_new_keys_from_yaml(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(
        "data:\n  holdout_sources:\n    - ../a\n    - ../b\n"
        "  resolve_conflicts_by_authority: true\n"
        "augmentation:\n  artefact_probability: 0.12\n  artefacts: [frame, blur]\n"
        "  artefact_max_severity: 0.5\n"
        "monitor: val_melanoma_auc\nprecision: bf16-mixed\nlow_res_epochs: 5\n"
        "low_res_size: 160\n"
    )
    config = load_config(path)
    assert config.data.holdout_sources == ["../a", "../b"]
    assert config.data.resolve_conflicts_by_authority is True
    assert config.augmentation.artefacts == ["frame", "blur"]
    assert (config.augmentation.artefact_probability, config.augmentation.artefact_max_severity) \
        == (0.12, 0.5)
    assert (config.monitor, config.precision) == ("val_melanoma_auc", "bf16-mixed")
    assert (config.low_res_epochs, config.low_res_size) == (5, 160)
    saved = tmp_path / "saved.yaml"
    save_config(config, saved)
    assert load_config(saved) == config


def test_new_key_defaults_change_nothing() -> None:
    config = TrainConfig()
    assert config.data.holdout_sources == []
    assert config.data.resolve_conflicts_by_authority is False
    assert config.augmentation.artefact_probability == 0.0
    assert config.low_res_epochs == 0
    # Lists are per instance, not shared between configs.
    config.data.holdout_sources.append("x")
    assert TrainConfig().data.holdout_sources == []


def test_list_key_from_set() -> None:
    overrides = dict(parse_override(text) for text in (
        "data.holdout_sources=[../shared/data/isic2017, ../shared/data/isic2018_task3_test]",
        "augmentation.artefacts=[hair]",
        "monitor=val_melanoma_auc",
        "precision=32-true",
    ))
    config = apply_overrides(TrainConfig(), overrides)
    assert config.data.holdout_sources == ["../shared/data/isic2017",
                                           "../shared/data/isic2018_task3_test"]
    assert config.augmentation.artefacts == ["hair"]
    assert apply_overrides(config, {"data.holdout_sources": []}).data.holdout_sources == []
    with pytest.raises(ConfigError, match=r"data\.holdout_sources must be a list of strings"):
        apply_overrides(TrainConfig(), dict([parse_override("data.holdout_sources=../x")]))
    with pytest.raises(ConfigError, match=r"augmentation\.artefacts must be among"):
        apply_overrides(TrainConfig(), dict([parse_override("augmentation.artefacts=[smudge]")]))
    with pytest.raises(ConfigError, match="precision must be one of"):
        apply_overrides(TrainConfig(), {"precision": "bf17"})


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("balance:\n  epoch_samples: 0\n", "balance.epoch_samples must be a positive"),
        ("balance:\n  strategy: weighted_loss\n  epoch_samples: 100\n",
         "balance.epoch_samples needs balance.strategy: sampler"),
    ],
)
def test_bad_epoch_samples_is_named(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_config(path)


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("ablation/*.yaml")), ids=lambda p: p.name)
def test_ablation_configs_load(path: Path) -> None:
    assert load_config(path).balance.epoch_samples == 4000


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"model.kwargs.foo": 1},
         "model.kwargs.foo: not an argument of efficientnet_lite0; it takes dropout, "
         "drop_connect_rate"),
        ({"model.kwargs.dropout": 5}, r"model.kwargs.dropout must be in \[0, 1\), got 5"),
        ({"model.kwargs.drop_connect_rate": -0.1}, r"model.kwargs.drop_connect_rate must be in"),
        ({"model.kwargs.dropout": "lots"}, "model.kwargs.dropout must be a number or empty"),
        ({"model.name": "assignment_cnn", "model.pretrained": False,
          "model.kwargs.batch_norm": 1}, "model.kwargs.batch_norm must be true or false"),
        ({"model.name": "assignment_cnn", "model.pretrained": False,
          "model.kwargs.input_size": 64}, r"model.kwargs.input_size: set by the image size"),
        ({"model.name": "assignment_cnn", "model.pretrained": False,
          "model.kwargs.in_channels": 1}, "model.kwargs.in_channels: not an argument"),
        ({"model.image_size": 7}, "model.image_size must be at least 32"),
        ({"model.image_size": 0}, "model.image_size must be at least 32"),
        ({"data.num_workers": -2}, "data.num_workers must be >= 0"),
        ({"early_stopping_patience": -1}, "early_stopping_patience must be >= 0"),
        ({"optim.warmup_epochs": -1}, "optim.warmup_epochs must be >= 0"),
        ({"optim.weight_decay": -1e-4}, "optim.weight_decay must be >= 0"),
        ({"optim.min_lr_ratio": 2}, r"optim.min_lr_ratio must be in \[0, 1\]"),
        ({"seed": -1}, "seed must be in"),
        ({"data.split_seed": 2**40}, "data.split_seed must be in"),
        ({"accelerator": "abacus"}, "accelerator must be one of"),
        ({"augmentation.hflip": 1.5}, r"augmentation.hflip must be in \[0, 1\]"),
        ({"augmentation.scale": 1}, r"augmentation.scale must be in \[0, 1\)"),
        ({"augmentation.rotate": 720}, r"augmentation.rotate must be in \[0, 180\]"),
        ({"augmentation.brightness": -1}, "augmentation.brightness must be >= 0"),
        ({"augmentation.hue": 0.9}, r"augmentation.hue must be in \[0, 0.5\]"),
        ({"augmentation.crop_scale_min": 0}, r"augmentation.crop_scale_min must be in \(0, 1\]"),
        ({"model.name": "assignment_cnn"},
         "model.pretrained: assignment_cnn has no pretrained weights"),
    ],
)
def test_every_value_is_checked_and_named(overrides: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        apply_overrides(TrainConfig(), overrides)


def test_valid_model_kwargs_pass() -> None:
    config = apply_overrides(TrainConfig(), {"model.kwargs.dropout": None,
                                             "model.kwargs.drop_connect_rate": 0.0})
    assert config.model.kwargs == {"dropout": None, "drop_connect_rate": 0.0}


def test_a_config_that_is_not_utf8_is_named(tmp_path: Path) -> None:
    path = tmp_path / "latin.yaml"
    path.write_bytes(b"# r\xe9glages\nepochs: 2\n")
    with pytest.raises(ConfigError, match="is not UTF-8 text"):
        load_config(path)


def test_a_renamed_key_still_loads_from_old_configs_and_overrides(tmp_path: Path) -> None:
    old = tmp_path / "old.yaml"
    old.write_text("augmentation:\n  color_jitter: 0.25\n")
    assert load_config(old).augmentation.colour_jitter == 0.25
    overridden = apply_overrides(TrainConfig(), {"augmentation.color_jitter": 0.0})
    assert overridden.augmentation.colour_jitter == 0.0
    assert "color_jitter" not in overridden.to_dict()["augmentation"]
