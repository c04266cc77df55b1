"""The HTTP service and its web page: ``melanoscan serve``.

:func:`create_app` builds the FastAPI app around one :class:`~melanoscan.inference.Predictor`;
:class:`ServeLimits` holds every limit a request is checked against.
"""

from melanoscan.serving.app import create_app
from melanoscan.serving.limits import ServeLimits

__all__ = ["ServeLimits", "create_app"]
