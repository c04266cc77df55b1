"""Why a training run cannot start or go on: one family of errors for preparing and training."""

from __future__ import annotations

__all__ = ["TrainingError", "TrainingInputError", "TrainingInterrupted"]


class TrainingError(Exception):
    """A run cannot start or continue; the message says why and what to do."""


class TrainingInputError(TrainingError):
    """The data, the run directory or the resume request is unusable; nothing was trained."""


class TrainingInterrupted(TrainingError):
    """The run was interrupted (Ctrl-C); its checkpoints are kept for ``--resume``."""
