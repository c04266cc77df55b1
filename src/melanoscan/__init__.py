"""melanoscan: melanoma detection in dermoscopy images."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("melanoscan")
except PackageNotFoundError:  # running from a source tree without an install
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
