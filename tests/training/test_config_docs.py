"""docs/TRAINING.md's config table names every key of TrainConfig, and only those."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import get_type_hints

from melanoscan.training.config import TrainConfig

DOC = Path(__file__).resolve().parents[2] / "docs" / "TRAINING.md"


def config_keys(kind: type = TrainConfig, prefix: str = "") -> set[str]:
    """Every dotted leaf key of a config dataclass (``optim.lr``, ``epochs``...)."""
    hints = get_type_hints(kind)
    keys: set[str] = set()
    for field in dataclasses.fields(kind):
        hint = hints[field.name]
        if isinstance(hint, type) and dataclasses.is_dataclass(hint):
            keys |= config_keys(hint, f"{prefix}{field.name}.")
        else:
            keys.add(prefix + field.name)
    return keys


def documented_keys(text: str) -> set[str]:
    """Keys in the first cell of the "## Config" table's rows.

    A cell names one dotted key, then possibly more by leaf name alone, which take the first
    key's section: ``| `optim.lr`, `weight_decay` |`` documents ``optim.lr`` and
    ``optim.weight_decay``.
    """
    section = text.split("\n## Config\n", 1)[1].split("\n#", 1)[0]
    keys: set[str] = set()
    for line in section.splitlines():
        if not line.startswith("| `"):
            continue
        names = re.findall(r"`([^`]+)`", line.split("|")[1])
        prefix = names[0].rpartition(".")[0]
        keys |= {name if "." in name or not prefix else f"{prefix}.{name}" for name in names}
    return keys


def test_documented_keys_reads_leaf_names_in_the_first_keys_section() -> None:
    table = ("\n## Config\n\n| key | default |\n|---|---|\n"
             "| `optim.lr`, `weight_decay` | `1e-3`, `1e-4` |\n| `epochs`, `seed` | `30` |\n"
             "| `data.cache` | `disk` (not `memory`) |\n\n### Next\n| `model.name` | x |\n")
    assert documented_keys(table) == {"optim.lr", "optim.weight_decay", "epochs", "seed",
                                      "data.cache"}


def test_every_config_key_is_documented() -> None:
    keys, documented = config_keys(), documented_keys(DOC.read_text())
    assert {"optim.ema_decay", "augmentation.artefact_probability", "epochs"} <= keys
    assert not keys - documented, f"document in docs/TRAINING.md: {sorted(keys - documented)}"
    assert not documented - keys, f"not config keys: {sorted(documented - keys)}"
