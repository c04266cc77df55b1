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
        ("monitor: train_loss\n", "monitor must be a validation metric"),
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
