"""Products of fashion-synth: categories, attributes and their 2D drawing with PIL.

A product is ``(category, color, pattern, shape)``. Every category has one *shape*
attribute with four ordered values (sleeve length for tops and dresses, length for skirts
and trousers, heel height for shoes, shaft height for boots). Products are drawn as flat
silhouettes on a light grey background with a dark outline (so that white products show),
filled with the colour and the pattern in a contrasting colour. A small per-image jitter
(position +-2 px and colour shade +-8 per channel, on the 64 px design grid) makes images
of the same split differ in more than their attributes, as photos of real products do; it
never changes what an attribute word describes.

Drawing works on a 64-unit design grid scaled to the requested image size, so images are
drawn natively at the protocol's ``image_size``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
from PIL import Image, ImageDraw

GRID = 64
"""Design grid: every coordinate below is in units of a 64-pixel canvas."""

BACKGROUND = (242, 242, 242)
OUTLINE = (55, 55, 55)

COLORS: dict[str, tuple[int, int, int]] = {
    "red": (206, 32, 41),
    "orange": (245, 130, 32),
    "yellow": (247, 214, 48),
    "green": (38, 150, 62),
    "teal": (0, 136, 138),
    "blue": (38, 86, 212),
    "purple": (120, 50, 170),
    "pink": (240, 120, 180),
    "brown": (120, 72, 36),
    "black": (28, 28, 28),
    "white": (252, 252, 252),
    "gray": (140, 140, 140),
}
"""The 12 colours, RGB 0..255 (before the per-image shade jitter)."""

PATTERNS: tuple[str, ...] = ("plain", "striped", "dotted", "checked", "zigzag", "floral")


@dataclass(frozen=True)
class Category:
    """A product category (a query group) and its shape attribute.

    ``shape_values`` are ordered from least to most (shortest sleeve ... longest; flat ...
    highest heel), so a caption may say "shorter" / "longer" for a change.
    """

    name: str
    kind: str  # "garment" or "shoe"
    shape_attribute: str  # e.g. "sleeve length"
    shape_values: tuple[str, ...]


CATEGORIES: dict[str, Category] = {
    c.name: c
    for c in (
        Category("tshirt", "garment", "sleeves", ("sleeveless", "short", "elbow", "long")),
        Category("dress", "garment", "sleeves", ("sleeveless", "short", "elbow", "long")),
        Category("skirt", "garment", "length", ("mini", "knee", "midi", "maxi")),
        Category("trousers", "garment", "length", ("shorts", "knee", "cropped", "full")),
        Category("shoe", "shoe", "heel", ("flat", "low", "mid", "high")),
        Category("boot", "shoe", "shaft", ("ankle", "mid-calf", "knee-high", "thigh-high")),
    )
}
"""The six categories; each is a query group with its own gallery (as FashionIQ's)."""

ATTRIBUTES: tuple[str, ...] = ("color", "pattern", "shape")
"""The attributes a pair may change (1 to 3 of them; the category never changes)."""


@dataclass(frozen=True, order=True)
class Product:
    """One product: its category and attribute values (``shape`` is the category's shape
    attribute value, e.g. ``"short"`` sleeves for a t-shirt)."""

    category: str
    color: str
    pattern: str
    shape: str

    def __post_init__(self) -> None:
        cat = CATEGORIES.get(self.category)
        if cat is None:
            raise ValueError(f"unknown category {self.category!r}; expected {sorted(CATEGORIES)}")
        if self.color not in COLORS:
            raise ValueError(f"unknown color {self.color!r}; expected {sorted(COLORS)}")
        if self.pattern not in PATTERNS:
            raise ValueError(f"unknown pattern {self.pattern!r}; expected {list(PATTERNS)}")
        if self.shape not in cat.shape_values:
            raise ValueError(f"{self.category}: unknown shape {self.shape!r}; expected {cat.shape_values}")

    def get(self, attribute: str) -> str:
        return str(getattr(self, attribute))

    def changed(self, other: "Product") -> list[str]:
        """The attributes (in :data:`ATTRIBUTES` order) in which ``other`` differs."""
        return [a for a in ATTRIBUTES if self.get(a) != other.get(a)]

    def to_list(self) -> list[str]:
        return [self.category, self.color, self.pattern, self.shape]

    @classmethod
    def from_list(cls, v: Sequence[Any]) -> "Product":
        return cls(str(v[0]), str(v[1]), str(v[2]), str(v[3]))


def all_products(category: str) -> list[Product]:
    """Every product of ``category`` (12 colours x 6 patterns x 4 shapes = 288), sorted."""
    cat = CATEGORIES[category]
    return [Product(category, c, p, s) for c in COLORS for p in PATTERNS for s in cat.shape_values]


# ------------------------------------------------------------------------------ drawing


def _pattern_color(rgb: tuple[int, int, int]) -> tuple[int, int, int]:
    luminance = 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]
    return (250, 250, 250) if luminance < 150 else (45, 45, 45)


def _silhouette(p: Product, dx: float, dy: float) -> tuple[list[list[tuple[float, float]]], list[tuple[float, float, float, float]]]:
    """The product as polygons (filled with colour and pattern) and neck cut-outs (ellipses
    in background colour), in grid units, shifted by (dx, dy)."""
    cat = CATEGORIES[p.category]
    level = cat.shape_values.index(p.shape)
    polys: list[list[tuple[float, float]]] = []
    cuts: list[tuple[float, float, float, float]] = []
    if p.category in ("tshirt", "dress"):
        top, left, right = 14.0, 23.0, 41.0
        if p.category == "tshirt":
            polys.append([(left, top), (right, top), (right + 1, 52), (left - 1, 52)])
        else:
            polys.append([(left + 1, top), (right - 1, top), (right, 30), (48, 57), (16, 57), (left, 30)])
        sleeve = (0.0, 7.0, 13.0, 21.0)[level]
        if sleeve:
            for side in (-1, 1):
                # a sleeve: a band from shoulder (x0, top) and armpit (x0, top + 10), going
                # ``sleeve`` units outward and down
                x0 = left if side < 0 else right
                ux, uy = side * 0.72, 0.7
                polys.append([(x0, top), (x0 + ux * sleeve, top + uy * sleeve),
                              (x0 + ux * sleeve, top + 10 + uy * sleeve), (x0, top + 10)])
        cuts.append((28.0, top - 3.5, 36.0, top + 3.5))
    elif p.category == "skirt":
        bottom = (30.0, 39.0, 48.0, 58.0)[level]
        flare = (bottom - 12) * 0.35
        polys.append([(23, 12), (41, 12), (41 + flare, bottom), (23 - flare, bottom)])
    elif p.category == "trousers":
        bottom = (26.0, 36.0, 47.0, 58.0)[level]
        polys.append([(22, 8), (42, 8), (43.5, bottom), (33.5, bottom), (32, 20),
                      (30.5, bottom), (20.5, bottom)])
    elif p.category == "shoe":
        h = (0.0, 5.0, 10.0, 15.0)[level]
        ground = 50.0
        polys.append([(8, ground), (26, ground), (44, ground - h), (50, ground - h),
                      (51, ground - h - 9), (44, ground - h - 8), (34, ground - h * 0.55 - 5),
                      (14, ground - 7), (8, ground - 4)])
        if h:
            polys.append([(46, ground - h), (50, ground - h), (49, ground), (47, ground)])
        else:
            polys.append([(43, ground), (51, ground - 0.5), (51, ground - 2), (43, ground - 2)])
        # drawn 1.15x wider and 1.6x taller about (30, ground), to fill the canvas
        polys = [[(30 + (x - 30) * 1.15, ground + (y - ground) * 1.6) for x, y in poly] for poly in polys]
    elif p.category == "boot":
        shaft = (6.0, 16.0, 27.0, 38.0)[level]
        ground = 54.0
        ankle = ground - 12
        polys.append([(10, ground), (48, ground), (48, ankle - shaft), (32, ankle - shaft),
                      (32, ankle), (22, ankle + 1), (12, ground - 7), (10, ground - 4)])
        polys.append([(40, ground), (48, ground), (48, ground + 3), (41, ground + 3)])
    else:  # pragma: no cover - guarded by Product
        raise ValueError(p.category)
    shift = lambda pts: [(x + dx, y + dy) for x, y in pts]  # noqa: E731
    return [shift(poly) for poly in polys], [(a + dx, b + dy, c + dx, d + dy) for a, b, c, d in cuts]


def _draw_pattern(draw: ImageDraw.ImageDraw, pattern: str, color: tuple[int, int, int], f: float) -> None:
    """Fill the whole canvas with ``pattern`` in ``color`` (the silhouette masks it later)."""
    w = max(1, round(1.6 * f))
    if pattern == "plain":
        return
    if pattern == "striped":
        for y in np.arange(2, GRID, 6.0):
            draw.rectangle([0, y * f, GRID * f, (y + 2.2) * f], fill=color)
    elif pattern == "dotted":
        for row, y in enumerate(np.arange(3, GRID, 6.0)):
            for x in np.arange(3 + 3 * (row % 2), GRID, 6.0):
                r = 1.5
                draw.ellipse([(x - r) * f, (y - r) * f, (x + r) * f, (y + r) * f], fill=color)
    elif pattern == "checked":
        for i, y in enumerate(np.arange(0, GRID, 5.0)):
            for j, x in enumerate(np.arange(0, GRID, 5.0)):
                if (i + j) % 2 == 0:
                    draw.rectangle([x * f, y * f, (x + 5) * f - 1, (y + 5) * f - 1], fill=color)
    elif pattern == "zigzag":
        for y in np.arange(3, GRID, 8.0):
            pts = [(x * f, (y + (2.5 if k % 2 else -2.5)) * f) for k, x in enumerate(np.arange(-4, GRID + 8, 4.0))]
            draw.line(pts, fill=color, width=w)
    elif pattern == "floral":
        for row, y in enumerate(np.arange(4, GRID, 9.0)):
            for x in np.arange(4 + 4.5 * (row % 2), GRID, 9.0):
                for ox, oy in ((0, -1.6), (0, 1.6), (-1.6, 0), (1.6, 0)):
                    cx, cy, r = x + ox, y + oy, 1.2
                    draw.ellipse([(cx - r) * f, (cy - r) * f, (cx + r) * f, (cy + r) * f], fill=color)
    else:  # pragma: no cover - guarded by Product
        raise ValueError(pattern)


def render_product(
    p: Product, size: int = GRID, jitter: tuple[float, float, int, int, int] = (0.0, 0.0, 0, 0, 0)
) -> np.ndarray:
    """``uint8 [size, size, 3]`` drawing of ``p``. ``jitter`` = (dx, dy) shift in grid units
    and a shade offset per RGB channel."""
    f = size / GRID
    dx, dy, *shade = jitter
    base = tuple(int(np.clip(c + s, 0, 255)) for c, s in zip(COLORS[p.color], shade))
    fill = Image.new("RGB", (size, size), base)  # type: ignore[arg-type]
    _draw_pattern(ImageDraw.Draw(fill), p.pattern, _pattern_color(COLORS[p.color]), f)
    polys, cuts = _silhouette(p, dx, dy)
    mask = Image.new("L", (size, size), 0)
    mdraw = ImageDraw.Draw(mask)
    for poly in polys:
        mdraw.polygon([(x * f, y * f) for x, y in poly], fill=255)
    canvas = Image.new("RGB", (size, size), BACKGROUND)
    canvas.paste(fill, (0, 0), mask)
    draw = ImageDraw.Draw(canvas)
    width = max(1, round(f))
    for poly in polys:
        pts = [(x * f, y * f) for x, y in poly]
        draw.line(pts + pts[:1], fill=OUTLINE, width=width)
    for a, b, c, d in cuts:  # a round neckline: the lower half of the ellipse
        draw.pieslice([a * f, b * f, c * f, d * f], 0, 180, fill=BACKGROUND, outline=OUTLINE, width=width)
    return np.asarray(canvas, dtype=np.uint8)


def random_jitter(rng: np.random.Generator) -> tuple[float, float, int, int, int]:
    """A per-image jitter: shift of -2..2 grid units in x and y, shade -8..8 per channel."""
    dx, dy = (float(v) for v in rng.integers(-2, 3, size=2))
    r, g, b = (int(v) for v in rng.integers(-8, 9, size=3))
    return (dx, dy, r, g, b)
