"""Resized images kept between epochs and runs, keyed by the content hash of their pixels.

Decoding and resizing a full-resolution dermoscopy image costs far more than a training step
on its resized copy, so :class:`ResizedImageLoader` keeps the output of
:meth:`Preprocessing.resize`. On disk the key is the manifest's ``content_hash`` (SHA-256 of the
decoded pixels), so a renamed, moved or re-encoded copy hits the same entry and an edited file
never hits a stale one.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import warnings
from pathlib import Path

import numpy as np

from melanoscan.data.images import ImageDecodeError, decode
from melanoscan.preprocess import Preprocessing

__all__ = ["CACHE_MODES", "ResizedImageLoader", "default_cache_dir"]

CACHE_MODES: tuple[str, ...] = ("disk", "memory", "none")


def default_cache_dir() -> Path:
    """Root of the disk cache, the first that applies of these.

    ``$MELANOSCAN_CACHE_DIR``, ``$XDG_CACHE_HOME/melanoscan``, ``~/.cache/melanoscan``.
    """
    explicit = os.environ.get("MELANOSCAN_CACHE_DIR")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg:
        return Path(xdg).expanduser() / "melanoscan"
    return Path.home() / ".cache" / "melanoscan"


class ResizedImageLoader:
    """Load images resized by a preprocessing recipe, caching the result.

    Disk entries live in ``cache_dir/images/<resize_policy>-<size>/<hash[:2]>/<hash>.npy`` and
    are written atomically, so DataLoader workers and DDP processes can share one directory.
    Images without a content hash are decoded every time in disk mode; memory mode keys them
    by path instead. Each process (and DataLoader worker) has its own memory cache.

    Args:
        preprocessing: the recipe whose :meth:`~Preprocessing.resize` is applied.
        mode: ``"disk"``, ``"memory"`` or ``"none"``.
        cache_dir: root of the disk cache; ``None`` uses :func:`default_cache_dir`.
    """

    def __init__(
        self, preprocessing: Preprocessing, mode: str = "disk", cache_dir: Path | None = None
    ) -> None:
        if mode not in CACHE_MODES:
            raise ValueError(f"cache mode must be one of {CACHE_MODES}, got {mode!r}")
        self.preprocessing = preprocessing
        self.mode = mode
        self.cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        size = preprocessing.image_size
        self.images_dir = self.cache_dir / "images" / f"{preprocessing.resize_policy}-{size}"
        self.hits = 0
        self.misses = 0
        self._memory: dict[str, np.ndarray] = {}
        self._can_write = True

    def load(self, path: str, content_hash: str | None = None) -> np.ndarray:
        """The resized ``uint8`` ``(S, S, 3)`` image; raises :class:`ImageDecodeError`."""
        if self.mode == "memory":
            key = content_hash or f"path:{path}"
            cached = self._memory.get(key)
            if cached is None:
                cached = self._memory[key] = self._decode(path)
            else:
                self.hits += 1
            return cached.copy()  # callers may augment in place
        if self.mode == "disk" and content_hash:
            entry = self.entry_path(content_hash)
            cached = self._read(entry)
            if cached is not None:
                self.hits += 1
                return cached
            pixels = self._decode(path)
            self._write(entry, pixels)
            return pixels
        return self._decode(path)

    def entry_path(self, content_hash: str) -> Path:
        """Where the disk cache keeps the image with this content hash."""
        return self.images_dir / content_hash[:2] / f"{content_hash}.npy"

    def _decode(self, path: str) -> np.ndarray:
        self.misses += 1
        try:
            # Decoded as prediction decodes (large JPEGs at reduced scale): the same input.
            image = decode(path, min_side=self.preprocessing.decode_min_side).image
        except OSError as exc:
            raise ImageDecodeError(path, f"cannot read: {exc.strerror or exc}") from None
        return self.preprocessing.resize(image)

    def _read(self, entry: Path) -> np.ndarray | None:
        size = self.preprocessing.image_size
        try:
            pixels = np.load(entry, allow_pickle=False)
        except FileNotFoundError:
            return None
        except (OSError, ValueError, EOFError):
            return None  # torn or corrupt entry: decode again and overwrite it
        if pixels.dtype != np.uint8 or pixels.shape != (size, size, 3):
            return None
        return pixels

    def _write(self, entry: Path, pixels: np.ndarray) -> None:
        if not self._can_write:
            return
        temp: str | None = None
        try:
            entry.parent.mkdir(parents=True, exist_ok=True)
            handle, temp = tempfile.mkstemp(
                dir=entry.parent, prefix=f".{entry.stem}.", suffix=".tmp"
            )
            with os.fdopen(handle, "wb") as stream:
                np.save(stream, pixels, allow_pickle=False)
            os.replace(temp, entry)
        except OSError as exc:
            self._can_write = False
            warnings.warn(
                f"image cache {self.images_dir} is not writable ({exc}); "
                "continuing without caching resized images",
                RuntimeWarning,
                stacklevel=3,
            )
            if temp is not None:
                with contextlib.suppress(OSError):
                    Path(temp).unlink(missing_ok=True)
