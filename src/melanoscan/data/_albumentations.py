"""albumentations, imported without its update check, leaving the environment as it was.

albumentations asks PyPI for a newer version on import unless ``NO_ALBUMENTATIONS_UPDATE`` is
set; training must not touch the network, and importing melanoscan must not change the
environment. Import it as ``from melanoscan.data._albumentations import A``.
"""

from __future__ import annotations

import os

_VARIABLE = "NO_ALBUMENTATIONS_UPDATE"
_added = _VARIABLE not in os.environ
if _added:
    os.environ[_VARIABLE] = "1"
try:
    import albumentations as A
finally:
    if _added:
        del os.environ[_VARIABLE]

__all__ = ["A"]
