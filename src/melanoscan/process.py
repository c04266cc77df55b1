"""Process-wide settings, made by entry points (the CLI, benchmark scripts), never on import.

Importing melanoscan changes nothing outside it: no environment variable, warning filter or
matplotlib backend (plots are drawn on :class:`matplotlib.figure.Figure`, which needs none).
"""

from __future__ import annotations

import os

__all__ = ["configure_process"]


def configure_process() -> None:
    """Settings for a melanoscan process; call before torch is imported.

    OpenMP threads that spin while waiting collapse when anything else wants the same cores (a
    DataLoader worker, a second job): EfficientNet-Lite0 training steps on 2 cores shared with
    another training job measured 0.9 images/s spinning against 6.2 passive. So
    ``OMP_WAIT_POLICY`` defaults to ``PASSIVE``; an explicit value in the environment wins.
    """
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
