"""The HTTP service and its web page: ``melanoscan serve``.

:func:`create_app` builds the FastAPI app around one :class:`~melanoscan.inference.Predictor`;
:class:`ServeLimits` holds every limit a request is checked against. ``create_app`` is imported
on first use, so that ``melanoscan.serving.limits`` (e.g. :data:`MAX_ASPECT_RATIO`) can be
imported without FastAPI or the model code.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from melanoscan.serving.limits import MAX_ASPECT_RATIO, ServeLimits

if TYPE_CHECKING:
    from melanoscan.serving.app import create_app

__all__ = ["MAX_ASPECT_RATIO", "ServeLimits", "create_app"]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from melanoscan.serving.app import create_app

        return create_app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
