"""A cache for generated datasets: one folder of ``images.npy`` + ``meta.json`` per key.

Embedded (procedurally generated) datasets are a pure function of a few parameters (generator
version, scale, seed, image size). They are generated once into a folder named after those
parameters and read back afterwards. :func:`load_or_generate` does that:

* the folder is written into a temporary sibling and renamed into place, so a reader never
  sees a half-written cache, and two processes racing to fill it keep one valid copy;
* on reading, ``meta.json`` must carry the expected key fields (e.g. ``generator_version``,
  ``scale``, ``seed``), ``images.npy`` must be ``uint8 [meta["num_images"], *image_shape]``
  and an optional ``check(images, meta)`` must pass; a folder that fails is logged, removed
  and regenerated.

Plugins use it with their own folder name and key fields; see the css-synth and
fashion-synth reference plugins.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence

import numpy as np

logger = logging.getLogger(__name__)

IMAGES_FILE = "images.npy"
META_FILE = "meta.json"

Generated = tuple[np.ndarray, dict[str, Any]]
#: Extra validation of a read cache: raise ``ValueError`` saying what is wrong.
Check = Callable[[np.ndarray, Mapping[str, Any]], None]

_READ_ERRORS = (OSError, ValueError, EOFError)


def read_folder(
    folder: Path | str,
    expected: Mapping[str, Any],
    image_shape: Sequence[int],
    check: Optional[Check] = None,
) -> Generated:
    """Read and validate a cache folder; raise ``ValueError`` / ``OSError`` saying what is
    wrong (missing or unreadable file, a key field other than ``expected``, an image array of
    another dtype or shape, a failed ``check``)."""
    folder = Path(folder)
    with open(folder / META_FILE, encoding="utf-8") as f:
        meta = json.load(f)
    if not isinstance(meta, dict):
        raise ValueError(f"{META_FILE}: expected a JSON object")
    for key, want in expected.items():
        if meta.get(key) != want:
            raise ValueError(f"{META_FILE}: {key} is {meta.get(key)!r}, expected {want!r}")
    n = meta.get("num_images")
    images = np.load(folder / IMAGES_FILE, allow_pickle=False)
    shape = (n, *(int(s) for s in image_shape))
    if images.dtype != np.uint8 or images.shape != shape:
        raise ValueError(f"{IMAGES_FILE}: {images.dtype} {images.shape}, expected uint8 {shape}")
    if check is not None:
        check(images, meta)
    return images, meta


def write_folder(
    folder: Path | str,
    images: np.ndarray,
    meta: Mapping[str, Any],
    is_valid: Callable[[Path], bool] = lambda folder: False,
) -> None:
    """Write ``images`` and ``meta`` into ``folder`` atomically (a temporary sibling folder,
    renamed into place). If another writer got there first, its folder is kept when
    ``is_valid(folder)``, else replaced by ours."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.tmp-", dir=folder.parent))
    try:
        np.save(tmp / IMAGES_FILE, images, allow_pickle=False)
        with open(tmp / META_FILE, "w", encoding="utf-8") as f:
            json.dump(meta, f, separators=(",", ":"))
        try:
            os.replace(tmp, folder)
        except OSError:
            # The target exists and is not empty: keep it if it is valid, else replace it.
            if not is_valid(folder):
                _remove(folder)
                os.replace(tmp, folder)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def load_or_generate(
    folder: Path | str | None,
    generate: Callable[[], Generated],
    expected: Mapping[str, Any],
    image_shape: Sequence[int],
    check: Optional[Check] = None,
    what: str = "dataset",
) -> Generated:
    """``(images, meta)`` from the cache ``folder`` when it is valid (see :func:`read_folder`),
    else ``generate()``, written to ``folder``. ``folder=None``: generate in memory only.
    ``what`` names the dataset in log messages."""
    if folder is None:
        return generate()
    folder = Path(folder)

    def read(path: Path) -> Generated:
        return read_folder(path, expected, image_shape, check)

    if folder.exists():
        try:
            images, meta = read(folder)
            logger.info("%s: using cache %s", what, folder)
            return images, meta
        except _READ_ERRORS as exc:
            logger.warning("%s: cache %s is invalid (%s); regenerating", what, folder, exc)
            _remove(folder)

    def is_valid(path: Path) -> bool:
        try:
            read(path)
            return True
        except _READ_ERRORS:
            return False

    images, meta = generate()
    write_folder(folder, images, meta, is_valid)
    logger.info("%s: wrote cache %s", what, folder)
    return images, meta


__all__ = ["IMAGES_FILE", "META_FILE", "load_or_generate", "read_folder", "write_folder"]
