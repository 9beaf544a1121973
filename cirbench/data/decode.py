"""Decoding an image file to the uint8 array the dataset contract returns.

:func:`display_rgb` turns a decoded image of any mode that real datasets contain into the
8-bit RGB picture a person sees on a white page; :func:`decode_image` (and so the
decoded-image cache, ``data verify`` and every run) goes through it. The rules:

* the EXIF orientation of a photo is applied (a phone JPEG is shown upright);
* ``1``, ``L``, ``P``, ``RGB``, ``RGBX``: as displayed (a palette is looked up);
* ``LA``, ``La``, ``PA``, ``RGBA``, ``RGBa`` and any image with a transparency key (PNG
  ``tRNS``): composited over white, ``round((c * a + 255 * (255 - a)) / 255)``;
* ``CMYK``: Pillow's conversion, ``R = (255 - C) * (255 - K) / 255`` (likewise G, B);
  ``YCbCr``: Pillow's JFIF conversion; ``LAB``: Pillow's colour-managed conversion (LittleCMS,
  CIE L*a*b* to sRGB). Embedded ICC profiles are not applied (for any mode);
* ``I;16``, ``I;16L``, ``I;16B``, ``I;16N`` (16-bit grey, e.g. 16-bit PNG): ``v`` -> ``round(v /
  257)``, which maps 0..65535 onto 0..255 and gives back exactly an 8-bit value ``k`` stored
  as ``257 * k``; ``I`` (32-bit integers: 16-bit PGM, 32-bit TIFF) on the same 16-bit scale
  when every value lies in 0..65535, else refused; ``F`` (32-bit float TIFF):
  ``round(255 * v)`` when every value lies in [0, 1], else refused;
* any other mode (``HSV``, which no file format stores) is refused:
  :class:`UnsupportedImageModeError` names the file and the mode;
* a file of several frames (animated GIF, multi-page TIFF) gives its first frame.

:data:`DECODE_RULES` numbers these rules; it is part of :attr:`ImageTransform.key`, so cached
decodings made under other rules are not reused.

:class:`ImageTransform` says how a decoded image becomes ``S x S``; its :attr:`~ImageTransform.key`
names the transform in cache keys. Modes:

* ``center_crop``: resize the shorter side to S, then crop the centre S x S (TIRG's
  ``Resize(S)`` + ``CenterCrop(S)``, docs/papers.md §1.2);
* ``stretch``: resize both sides to S (keeps the whole picture; used where a crop would cut
  content, e.g. CSS scenes whose objects reach the corners);
* ``pad``: resize the longer side to S and pad the rest with white.

Resizing is PIL's bilinear filter, which antialiases when shrinking.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from cirbench.data.errors import CorruptImageError, UnsupportedImageModeError

MODES = ("center_crop", "stretch", "pad")

DECODE_RULES = 2
"""Version of the rules of :func:`display_rgb` (1: Pillow's ``convert("RGB")``, which clips
16-bit grey to white). Bump it when a file would decode to other pixels."""

_AS_DISPLAYED = ("1", "L", "P", "RGB", "RGBX", "CMYK", "YCbCr", "LAB")
_WITH_ALPHA = ("LA", "La", "PA", "RGBA", "RGBa")
_GREY16 = ("I;16", "I;16L", "I;16B", "I;16N")


def _over_white(rgba: np.ndarray) -> np.ndarray:
    """``uint8 [H, W, 4]`` -> ``uint8 [H, W, 3]``: composited over white, rounded."""
    c = rgba[..., :3].astype(np.uint32)
    a = rgba[..., 3:].astype(np.uint32)
    return ((c * a + 255 * (255 - a) + 127) // 255).astype(np.uint8)


def _grey16_to_8(v: np.ndarray) -> np.ndarray:
    """Integers in 0..65535 -> ``round(v / 257)`` in 0..255 (no ties: 257 is odd)."""
    return ((v.astype(np.int64) * 255 + 32767) // 65535).astype(np.uint8)


def display_rgb(img: Image.Image, source: Path | str = "<image>") -> Image.Image:
    """The RGB picture a person sees of decoded image ``img`` (rules in the module
    docstring), as a mode ``RGB`` image of the same size (width and height swapped by an
    EXIF rotation).

    Raises :class:`UnsupportedImageModeError` naming ``source`` (the file) and the mode for
    a mode outside the rules, or an ``I``/``F`` image whose values lie outside the range the
    rules read."""
    img = ImageOps.exif_transpose(img)
    mode = img.mode
    if mode in _GREY16 or mode == "I":
        v = np.asarray(img).astype(np.int64)
        if mode == "I" and v.size and (v.min() < 0 or v.max() > 65535):
            raise UnsupportedImageModeError(
                source, mode, f"values in [{v.min()}, {v.max()}]; cirbench reads 32-bit integer "
                "images on the 16-bit scale 0..65535 only")
        grey = _grey16_to_8(v)
        out = np.repeat(grey[..., None], 3, axis=2)
        key = img.info.get("transparency")
        if isinstance(key, int):  # a 16-bit PNG's tRNS grey level: transparent, so white
            out[v == key] = 255
        return Image.fromarray(out, "RGB")
    if mode == "F":
        v = np.asarray(img, dtype=np.float64)
        if v.size and not (np.isfinite(v).all() and v.min() >= 0.0 and v.max() <= 1.0):
            found = f"values in [{v.min()}, {v.max()}]" if np.isfinite(v).all() else "values that are not finite"
            raise UnsupportedImageModeError(
                source, mode, f"{found}; cirbench reads floating-point images with values in [0, 1] only")
        grey = np.floor(v * 255.0 + 0.5).astype(np.uint8)
        return Image.fromarray(np.repeat(grey[..., None], 3, axis=2), "RGB")
    if mode in _WITH_ALPHA or (mode in _AS_DISPLAYED and img.has_transparency_data):
        if mode == "La":  # Pillow converts premultiplied grey to RGBA only through LA
            img = img.convert("LA")
        return Image.fromarray(_over_white(np.asarray(img.convert("RGBA"))), "RGB")
    if mode in _AS_DISPLAYED:
        return img.convert("RGB")
    raise UnsupportedImageModeError(source, mode, "cirbench has no rule for this mode")


@dataclass(frozen=True)
class ImageTransform:
    """Decoded image -> ``uint8 [S, S, 3]`` RGB.

    See docs/papers.md §1.2."""

    size: int
    mode: str = "center_crop"

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"ImageTransform: mode must be one of {MODES}, got {self.mode!r}")
        if self.size < 1:
            raise ValueError(f"ImageTransform: size must be >= 1, got {self.size}")

    @property
    def key(self) -> str:
        """Short name for cache keys, e.g. ``center_crop224-d2`` (``-d``: :data:`DECODE_RULES`)."""
        return f"{self.mode}{self.size}-d{DECODE_RULES}"

    def apply(self, img: Image.Image) -> np.ndarray:
        """``img`` (any mode; not RGB: through :func:`display_rgb`) -> ``uint8 [S, S, 3]``."""
        s = self.size
        if img.mode != "RGB":
            img = display_rgb(img, getattr(img, "filename", "") or "<image>")
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
    """Read ``path`` fully and return the picture a person sees (:func:`display_rgb`) as
    ``uint8 [H, W, 3]`` RGB (``[S, S, 3]`` with a ``transform``). Raises
    :class:`CorruptImageError` naming the file when it is missing, truncated or not an image,
    and its subclass :class:`UnsupportedImageModeError` (naming the file and the mode) for an
    image outside the rules."""
    try:
        with Image.open(path) as img:
            img.load()
            rgb = display_rgb(img, path)
            if transform is None:
                return np.asarray(rgb, dtype=np.uint8)
            return transform.apply(rgb)
    except CorruptImageError:
        raise
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise CorruptImageError(path, f"{type(exc).__name__}: {exc}") from exc
