"""The css-synth cache: generate once per (generator version, scale, seed), reuse after.

The data of ``(scale, seed)`` is a generated-dataset cache of the core
(:func:`cirbench.data.cache.load_or_generate`, kind ``generated``, key: the generator
version, scale and seed) in :func:`cache_folder`: ``images.npy`` (``uint8 [N, 64, 64, 3]``)
and ``data.json`` (see :func:`cirbench_css_synth.generator.generate`), written atomically; a
folder that fails validation (missing or unreadable file, other version / scale / seed, count
mismatch) is logged, removed and regenerated. ``cirbench data cache list`` shows it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import numpy as np

import cirbench
from cirbench_css_synth.generator import CANVAS, GEN_VERSION, generate

NAME = "css-synth"


def _params(scale: str, seed: int) -> dict[str, Any]:
    return {"generator_version": GEN_VERSION, "scale": scale, "seed": seed}


def _label(scale: str, seed: int) -> str:
    return f"v{GEN_VERSION}-{scale}-seed{seed}"


def cache_folder(cache_dir: Path | str, scale: str, seed: int) -> Path:
    """Where the data of ``(scale, seed)`` is cached under ``cache_dir``."""
    return cirbench.generated_key(NAME, _params(scale, seed), _label(scale, seed)).folder(cache_dir)


def _check_meta(images: np.ndarray, meta: Mapping[str, Any]) -> None:
    n = meta["num_images"]
    if len(meta.get("scenes", ())) != n or len(meta.get("labels", ())) != n:
        raise ValueError(f"scenes/labels do not have {n} entries")
    for field in ("triplets", "queries", "splits"):
        if field not in meta:
            raise ValueError(f"field {field!r} missing")


def load_or_generate(
    cache_dir: Path | str | None, scale: str, seed: int
) -> tuple[np.ndarray, dict[str, Any]]:
    """``(images, meta)`` for ``(scale, seed)``: from the cache when it is valid, else
    generated (and cached when ``cache_dir`` is given)."""
    return cirbench.load_or_generate(
        cache_dir, NAME, _params(scale, seed),
        lambda: generate(scale, seed),  # looked up at call time (tests replace it)
        image_shape=(CANVAS, CANVAS, 3),
        check=_check_meta,
        label=_label(scale, seed),
    )
