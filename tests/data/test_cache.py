"""The resized-image cache: disk entries keyed by content hash, memory mode, failures."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

from melanoscan.data.cache import ResizedImageLoader, default_cache_dir
from melanoscan.data.images import ImageDecodeError, load_rgb, pixel_hash
from melanoscan.preprocess import RESIZE_POLICY, Preprocessing
from tests.conftest import ImageWriter

PREP = Preprocessing(image_size=16)


def _image(write_image: ImageWriter, path: Path, seed: int = 0) -> tuple[str, str]:
    write_image(path, seed=seed, size=(40, 30))
    return str(path), pixel_hash(load_rgb(path))


def test_default_cache_dir_precedence(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("MELANOSCAN_CACHE_DIR", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_cache_dir() == tmp_path / "home" / ".cache" / "melanoscan"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "melanoscan"
    monkeypatch.setenv("MELANOSCAN_CACHE_DIR", str(tmp_path / "explicit"))
    assert default_cache_dir() == tmp_path / "explicit"


def test_disk_hit_needs_no_source_file(tmp_path: Path, write_image: ImageWriter) -> None:
    path, content_hash = _image(write_image, tmp_path / "a.jpg")
    loader = ResizedImageLoader(PREP, "disk", tmp_path / "cache")
    first = loader.load(path, content_hash)
    assert first.shape == (16, 16, 3)
    assert first.dtype == np.uint8
    assert np.array_equal(first, PREP.resize(load_rgb(path)))
    entry = tmp_path / "cache" / "images" / f"{RESIZE_POLICY}-16" / content_hash[:2]
    assert (entry / f"{content_hash}.npy").is_file()
    assert not list(entry.glob("*.tmp"))

    Path(path).unlink()
    again = ResizedImageLoader(PREP, "disk", tmp_path / "cache")  # a later run or worker
    assert np.array_equal(again.load(path, content_hash), first)
    assert (loader.hits, loader.misses, again.hits, again.misses) == (0, 1, 1, 0)


def test_disk_mode_without_hash_decodes_every_time(
    tmp_path: Path, write_image: ImageWriter
) -> None:
    path, _ = _image(write_image, tmp_path / "a.png")
    loader = ResizedImageLoader(PREP, "disk", tmp_path / "cache")
    loader.load(path)
    loader.load(path)
    assert (loader.hits, loader.misses) == (0, 2)
    assert not (tmp_path / "cache").exists()


@pytest.mark.parametrize("content", [b"not a numpy file", b""])
def test_corrupt_entry_is_rewritten(
    tmp_path: Path, write_image: ImageWriter, content: bytes
) -> None:
    path, content_hash = _image(write_image, tmp_path / "a.png")
    loader = ResizedImageLoader(PREP, "disk", tmp_path / "cache")
    entry = loader.entry_path(content_hash)
    entry.parent.mkdir(parents=True)
    entry.write_bytes(content)
    assert np.array_equal(loader.load(path, content_hash), PREP.resize(load_rgb(path)))
    assert np.array_equal(np.load(entry), PREP.resize(load_rgb(path)))


def test_entry_of_wrong_shape_is_rewritten(tmp_path: Path, write_image: ImageWriter) -> None:
    path, content_hash = _image(write_image, tmp_path / "a.png")
    loader = ResizedImageLoader(PREP, "disk", tmp_path / "cache")
    entry = loader.entry_path(content_hash)
    entry.parent.mkdir(parents=True)
    np.save(entry, np.zeros((8, 8, 3), dtype=np.uint8))
    assert loader.load(path, content_hash).shape == (16, 16, 3)
    assert np.load(entry).shape == (16, 16, 3)


def test_unwritable_cache_warns_once_and_keeps_loading(
    tmp_path: Path, write_image: ImageWriter
) -> None:
    blocker = tmp_path / "cache"
    blocker.write_text("a file where the cache directory should be")
    first, first_hash = _image(write_image, tmp_path / "a.png", seed=1)
    second, second_hash = _image(write_image, tmp_path / "b.png", seed=2)
    loader = ResizedImageLoader(PREP, "disk", blocker)
    with pytest.warns(RuntimeWarning, match="not writable"):
        assert loader.load(first, first_hash).shape == (16, 16, 3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert np.array_equal(loader.load(second, second_hash), PREP.resize(load_rgb(second)))


def test_memory_mode(tmp_path: Path, write_image: ImageWriter) -> None:
    path, content_hash = _image(write_image, tmp_path / "a.png")
    expected = PREP.resize(load_rgb(path))
    loader = ResizedImageLoader(PREP, "memory", tmp_path / "cache")
    first = loader.load(path, content_hash)
    first[:] = 0  # callers may augment in place without touching the cached copy
    Path(path).unlink()
    assert np.array_equal(loader.load(path, content_hash), expected)
    assert (loader.hits, loader.misses) == (1, 1)
    assert not (tmp_path / "cache").exists()


def test_memory_mode_keys_unhashed_images_by_path(tmp_path: Path, write_image: ImageWriter) -> None:
    path, _ = _image(write_image, tmp_path / "a.png")
    loader = ResizedImageLoader(PREP, "memory")
    loader.load(path)
    loader.load(path)
    assert (loader.hits, loader.misses) == (1, 1)


def test_none_mode_never_caches(tmp_path: Path, write_image: ImageWriter) -> None:
    path, content_hash = _image(write_image, tmp_path / "a.png")
    loader = ResizedImageLoader(PREP, "none", tmp_path / "cache")
    loader.load(path, content_hash)
    loader.load(path, content_hash)
    assert (loader.hits, loader.misses) == (0, 2)
    assert not (tmp_path / "cache").exists()


@pytest.mark.parametrize("mode", ["disk", "memory", "none"])
def test_unreadable_files_raise_decode_error(tmp_path: Path, mode: str) -> None:
    loader = ResizedImageLoader(PREP, mode, tmp_path / "cache")
    with pytest.raises(ImageDecodeError, match="file not found"):
        loader.load(str(tmp_path / "missing.png"), "ab" * 32)
    (tmp_path / "folder.png").mkdir()
    with pytest.raises(ImageDecodeError):
        loader.load(str(tmp_path / "folder.png"), "cd" * 32)
    (tmp_path / "text.png").write_text("not an image")
    with pytest.raises(ImageDecodeError, match="not an image"):
        loader.load(str(tmp_path / "text.png"))


def test_unknown_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="cache mode"):
        ResizedImageLoader(PREP, "redis")
