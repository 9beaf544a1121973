"""The css-synth cache: generate once per (generator version, scale, seed), reuse after.

The folder ``cache_dir / f"css-synth-v{GEN_VERSION}-{scale}-seed{seed}"`` holds
``images.npy`` (``uint8 [N, 64, 64, 3]``) and ``meta.json`` (see
:func:`cirbench_css_synth.generator.generate`). It is written into a temporary sibling
folder and renamed into place, so a reader never sees a half-written cache. A folder that
fails validation (missing or unreadable file, other version / scale / seed, count mismatch)
is logged, removed and regenerated.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from cirbench_css_synth.generator import CANVAS, GEN_VERSION, generate

logger = logging.getLogger(__name__)

IMAGES_FILE = "images.npy"
META_FILE = "meta.json"


def cache_folder(cache_dir: Path | str, scale: str, seed: int) -> Path:
    """Where the data of ``(scale, seed)`` is cached under ``cache_dir``."""
    return Path(cache_dir) / f"css-synth-v{GEN_VERSION}-{scale}-seed{seed}"


def _validate(folder: Path, scale: str, seed: int) -> tuple[np.ndarray, dict[str, Any]]:
    """Read a cache folder; raise ``ValueError`` / ``OSError`` saying what is wrong."""
    with open(folder / META_FILE, encoding="utf-8") as f:
        meta = json.load(f)
    expected = {"generator_version": GEN_VERSION, "scale": scale, "seed": seed}
    for key, want in expected.items():
        if meta.get(key) != want:
            raise ValueError(f"{META_FILE}: {key} is {meta.get(key)!r}, expected {want!r}")
    n = meta.get("num_images")
    images = np.load(folder / IMAGES_FILE, allow_pickle=False)
    if images.dtype != np.uint8 or images.shape != (n, CANVAS, CANVAS, 3):
        raise ValueError(
            f"{IMAGES_FILE}: {images.dtype} {images.shape}, expected uint8 ({n}, {CANVAS}, "
            f"{CANVAS}, 3)"
        )
    if len(meta.get("scenes", ())) != n or len(meta.get("labels", ())) != n:
        raise ValueError(f"{META_FILE}: scenes/labels do not have {n} entries")
    for field in ("triplets", "queries", "splits"):
        if field not in meta:
            raise ValueError(f"{META_FILE}: field {field!r} missing")
    return images, meta


def _write(folder: Path, images: np.ndarray, meta: dict[str, Any]) -> None:
    """Write atomically: fill a temporary sibling folder, then rename it to ``folder``."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.tmp-", dir=folder.parent))
    try:
        np.save(tmp / IMAGES_FILE, images, allow_pickle=False)
        with open(tmp / META_FILE, "w", encoding="utf-8") as f:
            json.dump(meta, f, separators=(",", ":"))
        try:
            os.replace(tmp, folder)
        except OSError:
            # Another process finished first (the target exists and is not empty): keep
            # theirs if it is valid, else replace it with ours.
            try:
                _validate(folder, meta["scale"], meta["seed"])
            except (OSError, ValueError, EOFError):
                shutil.rmtree(folder, ignore_errors=True)
                os.replace(tmp, folder)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def load_or_generate(
    cache_dir: Path | str | None, scale: str, seed: int
) -> tuple[np.ndarray, dict[str, Any]]:
    """``(images, meta)`` for ``(scale, seed)``: from the cache when it is valid, else
    generated (and cached when ``cache_dir`` is given)."""
    if cache_dir is None:
        return generate(scale, seed)
    folder = cache_folder(cache_dir, scale, seed)
    if folder.exists():
        try:
            images, meta = _validate(folder, scale, seed)
            logger.info("css-synth: using cache %s", folder)
            return images, meta
        except (OSError, ValueError, EOFError) as exc:
            logger.warning("css-synth: cache %s is invalid (%s); regenerating", folder, exc)
            if folder.is_dir():
                shutil.rmtree(folder, ignore_errors=True)
            else:
                folder.unlink(missing_ok=True)
    images, meta = generate(scale, seed)
    _write(folder, images, meta)
    logger.info("css-synth: wrote cache %s", folder)
    return images, meta
