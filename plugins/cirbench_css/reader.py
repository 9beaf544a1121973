"""Reading TIRG's CSS file ``css_toy_dataset_novel2_small.dup.npy`` (docs/papers.md §1.1).

The file is a NumPy ``.npy`` holding a 0-d object array around a dict pickled by Python 2, so
it is loaded with ``allow_pickle=True, encoding="latin1"``. Keys ``train`` and ``test``; each
split holds ``objects_img`` (per image, a list of objects: dicts with ``color``, ``shape``,
``size``, ``pos``), ``mods`` (dicts with parallel lists ``from`` / ``to`` of image indices and
the text ``to_str``) and optionally ``labels`` (per image; an image's caption is
``str(label)``, by default its own index).

Text: a Python 2 byte string is read as latin-1, as docs/papers.md §1.1 says to load the file:
one character per byte, so reading never fails and two different byte strings never become
one text (unlike decoding with replacement). Python 2 unicode strings arrive as they were.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cirbench import AnnotationError

CSS_FILE = "css_toy_dataset_novel2_small.dup.npy"
SPLITS = ("train", "test")


@dataclass(frozen=True)
class CssPair:
    """One (from, to) pair of a modification: split-local image indices and the text."""

    mod: int
    source: int
    target: int
    text: str


@dataclass
class CssSplit:
    """One split of the CSS file."""

    objects: list[list[dict[str, Any]]]
    captions: list[str]
    pairs: list[CssPair]

    @property
    def num_images(self) -> int:
        return len(self.objects)


def _as_str(x: Any) -> str:
    return x.decode("latin1") if isinstance(x, bytes) else str(x)


def _key(d: dict, key: str, where: str, path: Path) -> Any:
    for k in (key, key.encode("latin1")):
        if k in d:
            return d[k]
    raise AnnotationError(path, f"{where}: key {key!r} missing (has {sorted(_as_str(k) for k in d)})")


def _object(o: Any, where: str, path: Path) -> dict[str, Any]:
    if not isinstance(o, dict):
        raise AnnotationError(path, f"{where}: an object must be a dict, got {type(o).__name__}")
    pos = _key(o, "pos", where, path)
    try:
        row, col = (float(v) for v in pos)
    except (TypeError, ValueError) as exc:
        raise AnnotationError(path, f"{where}: pos {pos!r} is not a (row, col) pair") from exc
    return {"color": _as_str(_key(o, "color", where, path)), "shape": _as_str(_key(o, "shape", where, path)),
            "size": _as_str(_key(o, "size", where, path)), "pos": (row, col)}


def _split(raw: Any, name: str, path: Path) -> CssSplit:
    if not isinstance(raw, dict):
        raise AnnotationError(path, f"split {name!r} must be a dict, got {type(raw).__name__}")
    objects_img = _key(raw, "objects_img", f"split {name!r}", path)
    objects = [[_object(o, f"{name} image {i}", path) for o in objs] for i, objs in enumerate(objects_img)]
    n = len(objects)
    labels = None
    for k in ("labels", b"labels"):
        if k in raw:
            labels = raw[k]
    if labels is not None and len(labels) != n:
        raise AnnotationError(path, f"split {name!r}: {len(labels)} labels for {n} images")
    captions = [_as_str(lab) for lab in labels] if labels is not None else [str(i) for i in range(n)]
    pairs: list[CssPair] = []
    for m, mod in enumerate(_key(raw, "mods", f"split {name!r}", path)):
        where = f"{name} mod {m}"
        if not isinstance(mod, dict):
            raise AnnotationError(path, f"{where}: must be a dict, got {type(mod).__name__}")
        froms, tos = list(_key(mod, "from", where, path)), list(_key(mod, "to", where, path))
        text = _as_str(_key(mod, "to_str", where, path)).strip()
        if len(froms) != len(tos):
            raise AnnotationError(path, f"{where}: {len(froms)} 'from' but {len(tos)} 'to' indices")
        if not text:
            raise AnnotationError(path, f"{where}: empty 'to_str'")
        for s, t in zip(froms, tos):
            s, t = int(s), int(t)
            if not (0 <= s < n and 0 <= t < n):
                raise AnnotationError(path, f"{where}: pair ({s}, {t}) outside the split's {n} images")
            pairs.append(CssPair(m, s, t, text))
    return CssSplit(objects, captions, pairs)


def read_css_file(path: Path | str) -> dict[str, CssSplit]:
    """Parse the CSS file; raises :class:`~cirbench.data.errors.AnnotationError` naming the
    file and the field at fault.

    See docs/papers.md §1.1."""
    path = Path(path)
    try:
        arr = np.load(path, allow_pickle=True, encoding="latin1")
    except Exception as exc:  # pickle, zip and format errors all mean "not the CSS file"
        raise AnnotationError(path, f"cannot load ({type(exc).__name__}: {exc})") from exc
    data = arr.item() if isinstance(arr, np.ndarray) and arr.dtype == object and arr.shape == () else arr
    if not isinstance(data, dict):
        raise AnnotationError(path, f"expected a pickled dict with keys 'train' and 'test', got {type(data).__name__}")
    return {s: _split(_key(data, s, "top level", path), s, path) for s in SPLITS}


def image_entry(split: str, index: int) -> str:
    """The 3D image of ``index`` in ``split``: ``images/css_{split}_{index:06d}.png``.

    See docs/papers.md §1.1."""
    return f"images/css_{split}_{index:06d}.png"


def query_group(text: str) -> str:
    """The modification kind of a CSS text: ``add``, ``remove``, else ``change``.

    See docs/papers.md §1.1."""
    first = text.split()[0].lower() if text.split() else ""
    return first if first in ("add", "remove") else "change"
