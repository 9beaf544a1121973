"""The css-synth cache: generate once per (generator version, scale, seed), reuse after.

The folder ``cache_dir / f"css-synth-v{GEN_VERSION}-{scale}-seed{seed}"`` holds
``images.npy`` (``uint8 [N, 64, 64, 3]``) and ``meta.json`` (see
:func:`cirbench_css_synth.generator.generate`), managed by the core's generated-data cache
(:mod:`cirbench.gencache`): written atomically, and a folder that fails validation (missing
or unreadable file, other version / scale / seed, count mismatch) is logged, removed and
regenerated.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import numpy as np

from cirbench import gencache
from cirbench_css_synth.generator import CANVAS, GEN_VERSION, generate

IMAGES_FILE = gencache.IMAGES_FILE
META_FILE = gencache.META_FILE


def cache_folder(cache_dir: Path | str, scale: str, seed: int) -> Path:
    """Where the data of ``(scale, seed)`` is cached under ``cache_dir``."""
    return Path(cache_dir) / f"css-synth-v{GEN_VERSION}-{scale}-seed{seed}"


def _check_meta(images: np.ndarray, meta: Mapping[str, Any]) -> None:
    n = meta["num_images"]
    if len(meta.get("scenes", ())) != n or len(meta.get("labels", ())) != n:
        raise ValueError(f"{META_FILE}: scenes/labels do not have {n} entries")
    for field in ("triplets", "queries", "splits"):
        if field not in meta:
            raise ValueError(f"{META_FILE}: field {field!r} missing")


def load_or_generate(
    cache_dir: Path | str | None, scale: str, seed: int
) -> tuple[np.ndarray, dict[str, Any]]:
    """``(images, meta)`` for ``(scale, seed)``: from the cache when it is valid, else
    generated (and cached when ``cache_dir`` is given)."""
    return gencache.load_or_generate(
        None if cache_dir is None else cache_folder(cache_dir, scale, seed),
        lambda: generate(scale, seed),  # looked up at call time (tests replace it)
        expected={"generator_version": GEN_VERSION, "scale": scale, "seed": seed},
        image_shape=(CANVAS, CANVAS, 3),
        check=_check_meta,
        what="css-synth",
    )
