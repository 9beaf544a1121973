"""Procedural CSS-like scenes, their modifications and TIRG's 2D renderer (docs/papers.md §1.1).

What this module implements, rule by rule:

* **Scenes** (CSS, TIRG's "CLEVR-style synthesized" data): 1..``max_objects`` objects on a
  3x3 grid, at most one object per cell. An object has a shape (``cube``, ``sphere``,
  ``cylinder``, the words CSS's texts use), one of TIRG's 8 colours, a size (``small`` /
  ``large``) and a cell (``top-left`` ... ``bottom-right``). Cell centres sit at the
  fractional (row, col) positions {0.2, 0.5, 0.8}, so even large objects never overlap and
  two scenes look identical exactly when they hold the same objects.
* **Rendering** follows TIRG's ``generate_2d_image`` (docs/papers.md §1.1) exactly at 64x64:
  white canvas; half-size s = 4 px, 8 if large; centre y = pos[0]·64, x = pos[1]·64;
  ``cube`` (TIRG's ``rectangle``) is the square rows [int(y-s), int(y+s)), cols
  [int(x-s), int(x+s)); ``sphere`` (``circle``) is a diamond: rows int(y-s)..int(y+s)
  inclusive, cols [int(x+|y0-y|-s), int(x-|y0-y|+s)); ``cylinder`` (``triangle``) points
  up: rows [int(y-s), int(y+s)), cols between x ± (y0-y+s)/2; objects are painted in list
  order. TIRG's own shape names are accepted too, so a loader of the real CSS file can
  reuse :func:`render_scene`.
* **Modifications** are CSS's three kinds: ``add`` an object to an empty cell, ``remove``
  an object, ``change`` one attribute (colour, size or shape) of an object. Texts follow
  CSS's style ("add large red cube to top-left", "remove yellow sphere", "make
  middle-center small gray object red"), with a few phrasings per kind. Every text names
  its target scene unambiguously: an added object's size is always stated, and a removed
  object is located ("... at middle-center") when its colour and shape alone would match
  several objects of the scene.
* **Splits** are TIRG's CSS layout (docs/papers.md §1.1): per split a set of distinct source
  scenes, and for each source ``mods_per_source`` distinct modifications, each giving one
  target image. The split's images are all its sources and targets. Each image's label is
  the canonical key of its object set, so identical scenes share a label (label-based
  hits, docs/papers.md §1.0). Test source scenes never equal any training scene.

Everything is a pure function of ``(scale, seed)``: the same pair gives bit-identical images
and identical pairs.
"""

from __future__ import annotations

import functools
import logging
import time
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence, Union

import numpy as np

logger = logging.getLogger(__name__)

GEN_VERSION = 2
"""Bump whenever any rule here changes the generated data (it names the cache folder)."""

CANVAS = 64
"""TIRG's 2D canvas size in pixels."""

COLORS: dict[str, tuple[int, int, int]] = {
    "gray": (87, 87, 87),
    "red": (244, 35, 35),
    "blue": (42, 75, 215),
    "green": (29, 205, 20),
    "brown": (129, 74, 25),
    "purple": (129, 38, 192),
    "cyan": (41, 208, 208),
    "yellow": (255, 238, 51),
}
"""TIRG's 8 colours, RGB 0..255 (docs/papers.md §1.1)."""

SHAPES: tuple[str, ...] = ("cube", "sphere", "cylinder")
SIZES: tuple[str, ...] = ("small", "large")
ROWS: tuple[str, ...] = ("top", "middle", "bottom")
COLS: tuple[str, ...] = ("left", "center", "right")
POSITIONS: tuple[str, ...] = tuple(f"{r}-{c}" for r in ROWS for c in COLS)
"""Cell names, row-major: cell index ``3 * row + col``."""
CENTRES: tuple[float, ...] = (0.2, 0.5, 0.8)
"""Fractional centre of grid row / column 0, 1, 2."""

# How each shape name is drawn (TIRG's names and CSS's text words both accepted).
_DRAWING: dict[str, str] = {
    "cube": "square",
    "rectangle": "square",
    "sphere": "diamond",
    "circle": "diamond",
    "cylinder": "triangle",
    "triangle": "triangle",
}

MOD_KINDS: tuple[str, ...] = ("add", "remove", "change")
ATTRIBUTES: tuple[str, ...] = ("color", "size", "shape")

ADD_TEMPLATES: tuple[str, ...] = (
    "add {obj} to {pos}",
    "add {obj} at {pos}",
    "place {obj} at {pos}",
)
REMOVE_TEMPLATES: tuple[str, ...] = ("remove {desc}", "delete {desc}", "take away {desc}")
CHANGE_TEMPLATES: tuple[str, ...] = (
    "make {pos} {size} {color} object {value}",
    "change {pos} {size} {color} object to {value}",
)


@dataclass(frozen=True, order=True)
class SceneObject:
    """One object of a scene: in cell ``cell`` (0..8, row-major) with its attributes."""

    cell: int
    shape: str
    color: str
    size: str

    @property
    def position(self) -> str:
        """The cell's name, e.g. ``top-left``."""
        return POSITIONS[self.cell]

    @property
    def pos(self) -> tuple[float, float]:
        """Fractional (row, col) centre, as CSS stores it."""
        return (CENTRES[self.cell // 3], CENTRES[self.cell % 3])

    def to_list(self) -> list[Any]:
        return [self.cell, self.shape, self.color, self.size]

    @classmethod
    def from_list(cls, v: Sequence[Any]) -> "SceneObject":
        return cls(int(v[0]), str(v[1]), str(v[2]), str(v[3]))


Scene = tuple[SceneObject, ...]
"""A scene: its objects sorted by cell (one object per cell)."""


def make_scene(objects: Iterable[SceneObject]) -> Scene:
    """Canonical scene from objects: sorted by cell; raises if two share a cell."""
    scene = tuple(sorted(objects))
    cells = [o.cell for o in scene]
    if len(set(cells)) != len(cells):
        raise ValueError(f"two objects share a cell in {scene}")
    return scene


def scene_key(scene: Iterable[SceneObject]) -> str:
    """Canonical label of a scene: equal for exactly the scenes holding the same objects."""
    return "|".join(
        f"{o.position}:{o.size}:{o.color}:{o.shape}" for o in make_scene(scene)
    )


# ----------------------------------------------------------------------------- rendering


ObjectLike = Union[SceneObject, Mapping[str, Any]]


def _fields(obj: ObjectLike) -> tuple[str, str, str, float, float]:
    if isinstance(obj, SceneObject):
        row, col = obj.pos
        return obj.shape, obj.color, obj.size, row, col
    row, col = obj["pos"]
    return str(obj["shape"]), str(obj["color"]), str(obj["size"]), float(row), float(col)


@functools.lru_cache(maxsize=4096)
def _mask(drawing: str, large: bool, row: float, col: float, size: int) -> np.ndarray:
    """Boolean [size, size] mask of one object, by TIRG's row-by-row drawing rules."""
    mask = np.zeros((size, size), dtype=bool)
    s = 4.0 * size / CANVAS
    if large:
        s *= 2
    y = row * size
    x = col * size

    def paint(y0: int, x0: float, x1: float) -> None:
        if 0 <= y0 < size:
            mask[y0, max(int(x0), 0) : max(int(x1), 0)] = True

    if drawing == "square":
        for y0 in range(int(y - s), int(y + s)):
            paint(y0, x - s, x + s)
    elif drawing == "diamond":
        for y0 in range(int(y - s), int(y + s) + 1):
            x0 = x + (abs(y0 - y) - s)
            paint(y0, x0, 2 * x - x0)
    elif drawing == "triangle":
        for y0 in range(int(y - s), int(y + s)):
            x0 = x + (y0 - y + s) / 2
            x1 = 2 * x - x0
            paint(y0, min(x0, x1), max(x0, x1))
    else:  # pragma: no cover - guarded by the caller
        raise ValueError(drawing)
    mask.setflags(write=False)
    return mask


def _paint(canvas: np.ndarray, obj: ObjectLike) -> None:
    shape, color, size, row, col = _fields(obj)
    if shape not in _DRAWING:
        raise ValueError(f"unknown shape {shape!r}; expected one of {sorted(_DRAWING)}")
    if color not in COLORS:
        raise ValueError(f"unknown colour {color!r}; expected one of {sorted(COLORS)}")
    if size not in SIZES:
        raise ValueError(f"unknown size {size!r}; expected one of {list(SIZES)}")
    mask = _mask(_DRAWING[shape], size == "large", row, col, canvas.shape[0])
    canvas[mask] = COLORS[color]


def render_scene(objects: Iterable[ObjectLike], size: int = CANVAS) -> np.ndarray:
    """Draw a scene as TIRG's 2D image: ``uint8 [size, size, 3]`` RGB.

    ``objects`` are :class:`SceneObject` or CSS-style dicts with ``shape`` (``cube`` /
    ``sphere`` / ``cylinder`` or TIRG's ``rectangle`` / ``circle`` / ``triangle``),
    ``color``, ``size`` and ``pos`` (fractional (row, col)); painted in the given order. At
    ``size=64`` the pixels are exactly TIRG's (docs/papers.md §1.1); other sizes scale the
    half-size with the canvas. Rows or columns outside the canvas are clipped.
    """
    canvas = np.full((size, size, 3), 255, dtype=np.uint8)
    for obj in objects:
        _paint(canvas, obj)
    return canvas


def render_scenes(scenes: Sequence[Iterable[ObjectLike]], size: int = CANVAS) -> np.ndarray:
    """:func:`render_scene` for many scenes: ``uint8 [len(scenes), size, size, 3]``."""
    out = np.full((len(scenes), size, size, 3), 255, dtype=np.uint8)
    for i, scene in enumerate(scenes):
        canvas = out[i]
        for obj in scene:
            _paint(canvas, obj)
    return out


# ------------------------------------------------------------------------- modifications


@dataclass(frozen=True)
class Modification:
    """One modification and its text.

    ``kind`` is ``add`` (``obj`` goes into its empty cell), ``remove`` (the object in
    ``cell`` goes) or ``change`` (``attribute`` of the object in ``cell`` becomes ``value``).
    """

    kind: str
    cell: int
    text: str
    obj: SceneObject | None = None
    attribute: str | None = None
    value: str | None = None

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"kind": self.kind, "cell": self.cell, "text": self.text}
        if self.obj is not None:
            d["obj"] = self.obj.to_list()
        if self.attribute is not None:
            d["attribute"] = self.attribute
            d["value"] = self.value
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Modification":
        return cls(
            kind=str(d["kind"]),
            cell=int(d["cell"]),
            text=str(d["text"]),
            obj=SceneObject.from_list(d["obj"]) if "obj" in d else None,
            attribute=d.get("attribute"),
            value=d.get("value"),
        )


def apply_modification(scene: Iterable[SceneObject], mod: Modification) -> Scene:
    """The scene after ``mod``; raises ``ValueError`` if ``mod`` does not fit ``scene``."""
    by_cell = {o.cell: o for o in make_scene(scene)}
    if mod.kind == "add":
        if mod.obj is None or mod.obj.cell in by_cell:
            raise ValueError(f"cannot add {mod.obj} to {tuple(by_cell.values())}")
        by_cell[mod.obj.cell] = mod.obj
    elif mod.kind == "remove":
        if mod.cell not in by_cell:
            raise ValueError(f"nothing to remove at {POSITIONS[mod.cell]}")
        del by_cell[mod.cell]
    elif mod.kind == "change":
        if mod.cell not in by_cell or mod.attribute not in ATTRIBUTES:
            raise ValueError(f"cannot change {mod.attribute} at {POSITIONS[mod.cell]}")
        old = by_cell[mod.cell]
        fields = {"cell": old.cell, "shape": old.shape, "color": old.color, "size": old.size}
        fields[mod.attribute] = str(mod.value)
        by_cell[mod.cell] = SceneObject(**fields)
    else:
        raise ValueError(f"unknown modification kind {mod.kind!r}")
    return make_scene(by_cell.values())


def _choice(rng: np.random.Generator, items: Sequence[Any]) -> Any:
    return items[int(rng.integers(len(items)))]


def random_object(rng: np.random.Generator, cell: int) -> SceneObject:
    """A uniformly random object in ``cell``."""
    return SceneObject(cell, _choice(rng, SHAPES), _choice(rng, list(COLORS)), _choice(rng, SIZES))


def random_scene(rng: np.random.Generator, max_objects: int = 5) -> Scene:
    """A scene of 1..``max_objects`` (uniform count) random objects in distinct cells."""
    n = int(rng.integers(1, max_objects + 1))
    cells = rng.choice(9, size=n, replace=False)
    return make_scene(random_object(rng, int(c)) for c in cells)


def _remove_text(rng: np.random.Generator, scene: Scene, target: SceneObject) -> str:
    desc = f"{target.color} {target.shape}"
    twins = [o for o in scene if o.color == target.color and o.shape == target.shape]
    if len(twins) > 1:
        desc += f" at {target.position}"
    return _choice(rng, REMOVE_TEMPLATES).format(desc=desc)


def random_modification(
    rng: np.random.Generator, scene: Iterable[SceneObject], kind: str | None = None
) -> Modification:
    """A random modification of ``scene`` with its CSS-style text.

    The kind is uniform over those the scene allows (``add`` needs an empty cell; ``remove``
    needs at least two objects, so a target is never the blank canvas). The result always
    changes the scene.
    """
    scene = make_scene(scene)
    allowed = []
    if len(scene) < 9:
        allowed.append("add")
    if len(scene) >= 2:
        allowed.append("remove")
    if scene:
        allowed.append("change")
    if kind is None:
        kind = _choice(rng, allowed)
    elif kind not in allowed:
        raise ValueError(f"modification {kind!r} impossible on a scene of {len(scene)} objects")
    if kind == "add":
        taken = {o.cell for o in scene}
        cell = _choice(rng, [c for c in range(9) if c not in taken])
        obj = random_object(rng, cell)
        text = _choice(rng, ADD_TEMPLATES).format(
            obj=f"{obj.size} {obj.color} {obj.shape}", pos=obj.position
        )
        return Modification("add", cell, text, obj=obj)
    target = _choice(rng, scene)
    if kind == "remove":
        return Modification("remove", target.cell, _remove_text(rng, scene, target))
    attribute = _choice(rng, ATTRIBUTES)
    options = {"color": list(COLORS), "size": list(SIZES), "shape": list(SHAPES)}[attribute]
    value = _choice(rng, [v for v in options if v != getattr(target, attribute)])
    text = _choice(rng, CHANGE_TEMPLATES).format(
        pos=target.position, size=target.size, color=target.color, value=value
    )
    return Modification("change", target.cell, text, attribute=attribute, value=value)


# -------------------------------------------------------------------------------- splits


@dataclass(frozen=True)
class ScaleSpec:
    """How much to generate: source scenes per split and modifications per source."""

    train_sources: int
    test_sources: int
    mods_per_source: int = 5
    max_objects: int = 5


SCALES: dict[str, ScaleSpec] = {
    "tiny": ScaleSpec(train_sources=40, test_sources=30),
    "small": ScaleSpec(train_sources=1340, test_sources=340),
    "full": ScaleSpec(train_sources=3200, test_sources=3200),
}
"""The protocol's ``dataset_scale`` -> sizes. ``full`` is CSS's size: 19,200 images and 16,000
queries a split (CSS: about 19k and 16k). Five modifications per source give CSS's ratio of
queries to images (16k / 19k = 5 / 6); with three, a source's nearest neighbours in pixel
space are one of only three targets, and an image-only query scores far above CSS's 6.3 R@1
(v1 of this generator: image-only R@1 ~30 on ``small``)."""


@dataclass
class GeneratedSplit:
    """One split: its scenes (an image each) and its (source, target, modification) pairs.

    Image indices are local to the split (0 .. len(scenes)-1); the sources are
    ``sources``, each followed by its targets.
    """

    scenes: list[Scene]
    sources: list[int]
    pairs: list[tuple[int, int, Modification]]


def generate_split(
    rng: np.random.Generator,
    n_sources: int,
    mods_per_source: int,
    max_objects: int,
    exclude: set[str] | None = None,
) -> GeneratedSplit:
    """``n_sources`` distinct source scenes (none whose key is in ``exclude``), each
    followed by ``mods_per_source`` targets from distinct modifications."""
    exclude = exclude if exclude is not None else set()
    seen: set[str] = set()
    scenes: list[Scene] = []
    sources: list[int] = []
    pairs: list[tuple[int, int, Modification]] = []
    while len(sources) < n_sources:
        src = random_scene(rng, max_objects)
        key = scene_key(src)
        if key in seen or key in exclude:
            continue
        seen.add(key)
        src_idx = len(scenes)
        sources.append(src_idx)
        scenes.append(src)
        target_keys: set[str] = set()
        while len(target_keys) < mods_per_source:
            mod = random_modification(rng, src)
            tgt = apply_modification(src, mod)
            tkey = scene_key(tgt)
            if tkey in target_keys:
                continue
            target_keys.add(tkey)
            pairs.append((src_idx, len(scenes), mod))
            scenes.append(tgt)
    return GeneratedSplit(scenes=scenes, sources=sources, pairs=pairs)


def generate(scale: str, seed: int) -> tuple[np.ndarray, dict[str, Any]]:
    """Generate the whole dataset of ``scale`` from ``seed``.

    Returns ``(images, meta)``: ``images`` is ``uint8 [N, 64, 64, 3]`` (train images first,
    then test), ``meta`` the JSON-able description (scenes, labels, splits, triplets,
    queries with their label-based targets, generator version) that
    :class:`cirbench_css_synth.dataset.CssSynthDataset` reads.
    """
    if scale not in SCALES:
        raise ValueError(f"css-synth: unknown dataset_scale {scale!r}; expected {sorted(SCALES)}")
    spec = SCALES[scale]
    t0 = time.perf_counter()
    train_rng, test_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(2))
    train = generate_split(train_rng, spec.train_sources, spec.mods_per_source, spec.max_objects)
    train_keys = {scene_key(s) for s in train.scenes}
    test = generate_split(
        test_rng, spec.test_sources, spec.mods_per_source, spec.max_objects, exclude=train_keys
    )
    offset = len(train.scenes)
    scenes = train.scenes + test.scenes
    labels = [scene_key(s) for s in scenes]
    t1 = time.perf_counter()
    images = render_scenes(scenes)
    t2 = time.perf_counter()

    label_to_test_ids: dict[str, list[int]] = {}
    for i in range(offset, len(scenes)):
        label_to_test_ids.setdefault(labels[i], []).append(i)

    triplets = [
        {"reference": s, "text": m.text, "target": t, "group": m.kind, "mod": m.to_dict()}
        for s, t, m in train.pairs
    ]
    queries = [
        {
            "reference": s + offset,
            "text": m.text,
            "target": t + offset,
            "targets": label_to_test_ids[labels[t + offset]],
            "group": m.kind,
            "mod": m.to_dict(),
        }
        for s, t, m in test.pairs
    ]
    meta: dict[str, Any] = {
        "generator": "css-synth",
        "generator_version": GEN_VERSION,
        "scale": scale,
        "seed": seed,
        "image_size": CANVAS,
        "num_images": len(scenes),
        "scenes": [[o.to_list() for o in s] for s in scenes],
        "labels": labels,
        "splits": {
            "train": {"start": 0, "stop": offset, "sources": train.sources},
            "test": {
                "start": offset,
                "stop": len(scenes),
                "sources": [i + offset for i in test.sources],
            },
        },
        "triplets": triplets,
        "queries": queries,
    }
    logger.info(
        "css-synth: generated scale=%s seed=%d: %d images, %d triplets, %d queries "
        "(scenes %.2fs, rendering %.2fs)",
        scale, seed, len(scenes), len(triplets), len(queries), t1 - t0, t2 - t1,
    )
    return images, meta
