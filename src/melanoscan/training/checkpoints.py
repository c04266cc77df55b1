"""Checkpoint files: written atomically, checked before a resume."""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from melanoscan.bundle import atomic_write

__all__ = ["AtomicCheckpointIO", "checkpoint_problem"]


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes each checkpoint beside its target, syncs it and renames it into place.

    A failed write (a full disk) leaves the previous checkpoint of that name intact. Lightning's
    own writer goes through a temporary file elsewhere and copies it over the target, which a
    full disk cuts off half-way.
    """

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any | None = None
    ) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options")
        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)  # in memory: a full disk then raises OSError below
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(target, lambda tmp: tmp.write_bytes(buffer.getbuffer()))


def checkpoint_problem(path: Path) -> str | None:
    """Why the checkpoint at ``path`` cannot be loaded (``None`` when it can)."""
    try:
        # Memory-mapped: only the archive's index is read, not the tensors.
        torch.load(path, map_location="cpu", weights_only=False, mmap=True)
    except (OSError, RuntimeError, EOFError, ValueError, pickle.UnpicklingError) as exc:
        text = str(exc).strip()
        return text.splitlines()[0] if text else type(exc).__name__
    return None
