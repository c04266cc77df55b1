"""melanoscan: melanoma detection in dermoscopy images."""

import os
from importlib.metadata import PackageNotFoundError, version
from typing import Any

# OpenMP threads that spin while waiting collapse when anything else wants the same cores (a
# DataLoader worker, a second job): EfficientNet-Lite0 training steps on 2 cores shared with
# another training job measured 0.9 images/s spinning against 6.2 passive. Set before torch
# loads OpenMP; an explicit OMP_WAIT_POLICY in the environment wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

try:
    __version__ = version("melanoscan")
except PackageNotFoundError:  # running from a source tree without an install
    __version__ = "0.0.0+unknown"

__all__ = ["__version__", "load_bundle", "load_model"]


def __getattr__(name: str) -> Any:
    # Imported on first use so that `import melanoscan` (and the CLI's --help) stays light.
    if name == "load_bundle":
        from melanoscan.bundle import load_bundle

        return load_bundle
    if name == "load_model":
        from melanoscan.inference.predictor import load_model

        return load_model
    raise AttributeError(f"module 'melanoscan' has no attribute {name!r}")
