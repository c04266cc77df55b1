"""melanoscan: melanoma detection in dermoscopy images.

Importing it changes no process-wide state; the command line sets what it needs
(:func:`melanoscan.process.configure_process`).
"""

from importlib.metadata import PackageNotFoundError, version
from typing import Any

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
