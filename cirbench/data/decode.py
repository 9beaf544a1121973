"""Decoding an image file to the uint8 array the dataset contract returns.

:class:`ImageTransform` says how a decoded image becomes ``S x S``; its :attr:`~ImageTransform.key`
names the transform in cache keys. Modes:

* ``center_crop``: resize the shorter side to S, then crop the centre S x S (TIRG's
  ``Resize(S)`` + ``CenterCrop(S)``, REFERENCE.md §1.2);
* ``stretch``: resize both sides to S (keeps the whole picture; used where a crop would cut
  content, e.g. CSS scenes whose objects reach the corners);
* ``pad``: resize the longer side to S and pad the rest with white.

Resizing is PIL's bilinear filter, which antialiases when shrinking.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from cirbench.data.errors import CorruptImageError

MODES = ("center_crop", "stretch", "pad")


@dataclass(frozen=True)
class ImageTransform:
    """Decoded image -> ``uint8 [S, S, 3]`` RGB."""

    size: int
    mode: str = "center_crop"

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"ImageTransform: mode must be one of {MODES}, got {self.mode!r}")
        if self.size < 1:
            raise ValueError(f"ImageTransform: size must be >= 1, got {self.size}")

    @property
    def key(self) -> str:
        """Short name for cache keys, e.g. ``center_crop224``."""
        return f"{self.mode}{self.size}"

    def apply(self, img: Image.Image) -> np.ndarray:
        s = self.size
        img = img.convert("RGB")
        w, h = img.size
        if self.mode == "stretch":
            out = img.resize((s, s), Image.BILINEAR) if (w, h) != (s, s) else img
        elif self.mode == "center_crop":
            scale = s / min(w, h)
            nw, nh = max(s, round(w * scale)), max(s, round(h * scale))
            if (nw, nh) != (w, h):
                img = img.resize((nw, nh), Image.BILINEAR)
            left, top = (nw - s) // 2, (nh - s) // 2
            out = img.crop((left, top, left + s, top + s))
        else:  # pad
            scale = s / max(w, h)
            nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
            img = img.resize((nw, nh), Image.BILINEAR) if (nw, nh) != (w, h) else img
            out = Image.new("RGB", (s, s), (255, 255, 255))
            out.paste(img, ((s - nw) // 2, (s - nh) // 2))
        return np.asarray(out, dtype=np.uint8)


def decode_image(path: Path | str, transform: ImageTransform | None = None) -> np.ndarray:
    """Read ``path`` fully and return ``uint8 [H, W, 3]`` RGB (``[S, S, 3]`` with a
    ``transform``). Raises :class:`CorruptImageError` naming the file when it is missing,
    truncated or not an image."""
    try:
        with Image.open(path) as img:
            img.load()
            if transform is None:
                return np.asarray(img.convert("RGB"), dtype=np.uint8)
            return transform.apply(img)
    except CorruptImageError:
        raise
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise CorruptImageError(path, f"{type(exc).__name__}: {exc}") from exc
