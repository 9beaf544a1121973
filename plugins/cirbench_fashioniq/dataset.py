"""The ``fashioniq`` and ``fashioniq-joined`` datasets: FashionIQ read from its canonical layout
(REFERENCE.md §1.4), evaluated under VAL's protocol (§0 decision 3).

Layout (the files of XiaoxiaoGuo/fashion-iq):

* ``<root>/captions/cap.{dress,shirt,toptee}.{train,val}.json``: a JSON list of
  ``{"candidate": asin, "target": asin, "captions": [s1, s2]}``;
* ``<root>/image_splits/split.{dress,shirt,toptee}.{train,val}.json``: a JSON list of asins;
* ``<root>/images/<asin>.jpg`` (``.png`` and ``.jpeg`` are accepted when no ``.jpg`` exists).

The ``test`` files may be present but are not read: their targets are not public
(REFERENCE.md §1.4), so evaluation runs on the validation split, as VAL and SAC do.

``fashioniq`` (VAL's protocol, decision 3):

* every caption of a pair is its own query and its own training triplet (a pair gives two);
* hits by image identity: the one correct target is the pair's target (decision 2);
* each query's group is its category (``dress``, ``shirt``, ``toptee``), and each group is
  ranked against its own gallery (``has_group_galleries()``): as VAL, the unique sources and
  targets of that category's validation pairs (not the split file, REFERENCE.md §6.3); the
  shared ``gallery()`` is their union;
* the reference is removed from its own ranking (the evaluator's rule, decision 2). A pair
  whose candidate is its target (it could never be answered) and an empty caption are left
  out and counted in ``describe()``.

``fashioniq-joined``: the same pairs, galleries and groups, but one query (and one triplet)
per pair whose text joins the captions by ComposeAE's rule (REFERENCE.md §1.4):
``(category + " " + " and it ".join(captions)).lower()``. ComposeAE's merged three-category
gallery and its keeping of the reference in the ranking are not reproduced (decisions 2, 3).

Images: shorter side resized to the protocol's size, centre crop (TIRG's transform, which
ComposeAE uses on FashionIQ); loss ``batch_classification`` (REFERENCE.md §3).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import numpy as np

from cirbench import Query, Triplet
from cirbench.data import AnnotationError, DataLayout, LocalImageDataset, PublishedCount, Requirement, read_json, read_json_records
from cirbench.data.layout import ImageEntry
from cirbench.data.paths import list_inside

URL = "https://github.com/XiaoxiaoGuo/fashion-iq"
CATEGORIES = ("dress", "shirt", "toptee")
SPLITS = ("train", "val")
IMAGE_SUFFIXES = (".jpg", ".png", ".jpeg")

#: Counts computed from the published files, REFERENCE.md §1.4: (category, split) -> number.
PUBLISHED_PAIRS = {
    ("dress", "train"): 5985, ("shirt", "train"): 5988, ("toptee", "train"): 6027,
    ("dress", "val"): 2017, ("shirt", "val"): 2038, ("toptee", "val"): 1961,
}
PUBLISHED_SPLIT_IMAGES = {
    ("dress", "train"): 11452, ("shirt", "train"): 19036, ("toptee", "train"): 16121,
    ("dress", "val"): 3817, ("shirt", "val"): 6346, ("toptee", "val"): 5373,
}


def captions_file(category: str, split: str) -> str:
    return f"captions/cap.{category}.{split}.json"


def split_file(category: str, split: str) -> str:
    return f"image_splits/split.{category}.{split}.json"


def read_pairs(root: Path, category: str, split: str) -> list[tuple[str, str, list[str]]]:
    """``(candidate, target, captions)`` of every entry of ``cap.{category}.{split}.json``;
    raises :class:`AnnotationError` naming the file, the entry and the field for bad content."""
    rel = captions_file(category, split)
    out = []
    for n, item in enumerate(read_json_records(root, rel)):
        for key in ("candidate", "target"):
            if not isinstance(item.get(key), str) or not item[key].strip():
                raise AnnotationError(rel, f"entry {n}: field {key!r} missing or not a non-empty string")
        caps = item.get("captions")
        if not isinstance(caps, list) or not caps or not all(isinstance(c, str) for c in caps):
            raise AnnotationError(rel, f"entry {n}: field 'captions' missing or not a list of strings")
        out.append((item["candidate"].strip(), item["target"].strip(), caps))
    return out


def read_split(root: Path, category: str, split: str) -> list[str]:
    """The asins of ``split.{category}.{split}.json``."""
    rel = split_file(category, split)
    data = read_json(root, rel)
    if not isinstance(data, list) or not all(isinstance(a, str) and a.strip() for a in data):
        raise AnnotationError(rel, "expected a JSON list of asins (non-empty strings)")
    return [a.strip() for a in data]


def image_names(root: Path) -> dict[str, str]:
    """asin -> file name of the images under ``images/`` (``.jpg`` preferred); a symbolic link
    leading out of the root raises :class:`~cirbench.data.UnsafePathError`
    (:func:`~cirbench.data.paths.list_inside`)."""
    found: dict[str, str] = {}
    for rel in list_inside(root, "images/*", "file", source="images/"):
        name = rel.split("/", 1)[1]
        stem, suffix = os.path.splitext(name)
        if suffix.lower() in IMAGE_SUFFIXES:
            best = found.get(stem)
            if best is None or IMAGE_SUFFIXES.index(suffix.lower()) < IMAGE_SUFFIXES.index(
                    os.path.splitext(best)[1].lower()):
                found[stem] = name
    return found


def image_entry(asin: str, names: dict[str, str]) -> str:
    """The entry (relative to the root) of image ``asin``: ``images/<asin>.jpg`` unless only
    another accepted suffix exists."""
    return f"images/{names.get(asin, asin + '.jpg')}"


def join_captions(category: str, captions: list[str]) -> str:
    """ComposeAE's joined query text (REFERENCE.md §1.4), captions stripped, empty ones left out."""
    kept = [c.strip() for c in captions if c.strip()]
    return (category + " " + " and it ".join(kept)).lower() if kept else ""


class FashionIQLayout(DataLayout):
    """FashionIQ's files (REFERENCE.md §1.4); ``data verify`` compares the pair and split
    counts of each category with those computed from the published files."""

    folder = "fashioniq"
    url = URL
    train_files = "captions/cap.{dress,shirt,toptee}.train.json"
    test_files = "captions/cap.{dress,shirt,toptee}.val.json"
    requirements = (
        *(Requirement(captions_file(c, s), f"{c} {s} captions") for s in SPLITS for c in CATEGORIES),
        Requirement("image_splits/split.*.train.json", "training image lists", min_count=3),
        Requirement("image_splits/split.*.val.json", "validation image lists", min_count=3),
        Requirement("images", "the image files, images/<asin>.jpg", kind="dir"),
    )

    def image_entries(self, root: Path) -> list[ImageEntry]:
        names = image_names(root)
        out = []
        for split in SPLITS:
            for c in CATEGORIES:
                for cand, tgt, _ in read_pairs(root, c, split):
                    out += [ImageEntry(image_entry(cand, names), captions_file(c, split)),
                            ImageEntry(image_entry(tgt, names), captions_file(c, split))]
                out += [ImageEntry(image_entry(a, names), split_file(c, split)) for a in read_split(root, c, split)]
        return out

    def published_counts(self) -> list[PublishedCount]:
        def pairs(c: str, s: str) -> Callable[[Path], int]:
            return lambda root: len(read_pairs(root, c, s))

        def split_images(c: str, s: str) -> Callable[[Path], int]:
            return lambda root: len(read_split(root, c, s))

        out = [PublishedCount(f"{s} pairs of {c} ({captions_file(c, s)})", n, pairs(c, s), "REFERENCE.md §1.4")
               for (c, s), n in PUBLISHED_PAIRS.items()]
        out += [PublishedCount(f"{s} images of {c} ({split_file(c, s)})", n, split_images(c, s), "REFERENCE.md §1.4")
                for (c, s), n in PUBLISHED_SPLIT_IMAGES.items()]
        return out


class FashionIQDataset(LocalImageDataset):
    """``fashioniq``: VAL's protocol, one query per caption (see the module docstring)."""

    name = "fashioniq"
    version = 1
    base_loss = "batch_classification"
    layout = FashionIQLayout()
    transform_mode = "center_crop"
    #: False: one query per caption (VAL); True: the captions joined into one (ComposeAE).
    joined = False

    def texts(self, category: str, captions: list[str]) -> list[str]:
        """The query (or triplet) texts one pair gives."""
        if self.joined:
            text = join_captions(category, captions)
            return [text] if text else []
        return [c.strip() for c in captions if c.strip()]

    def load(self) -> None:
        names = image_names(self.root)
        self.skipped_self_pairs = 0
        self.skipped_captions = 0
        triplets: list[Triplet] = []
        for c in CATEGORIES:
            for cand, tgt, caps in read_pairs(self.root, c, "train"):
                s = self.index.add(image_entry(cand, names), captions_file(c, "train"))
                t = self.index.add(image_entry(tgt, names), captions_file(c, "train"))
                if s == t:
                    self.skipped_self_pairs += 1
                    continue
                texts = self.texts(c, caps)
                self.skipped_captions += (1 if self.joined else len(caps)) - len(texts)
                triplets += [Triplet(s, text, t) for text in texts]
        queries: list[Query] = []
        galleries: dict[str, np.ndarray] = {}
        for c in CATEGORIES:
            gallery: dict[int, None] = {}  # insertion-ordered set
            for cand, tgt, caps in read_pairs(self.root, c, "val"):
                s = self.index.add(image_entry(cand, names), captions_file(c, "val"))
                t = self.index.add(image_entry(tgt, names), captions_file(c, "val"))
                gallery[s] = gallery[t] = None
                if s == t:
                    self.skipped_self_pairs += 1
                    continue
                texts = self.texts(c, caps)
                self.skipped_captions += (1 if self.joined else len(caps)) - len(texts)
                queries += [Query(s, text, (t,), c) for text in texts]
            galleries[c] = np.fromiter(gallery, dtype=np.int64, count=len(gallery))
        self.triplets = triplets
        self.test_queries = queries
        self.group_galleries = galleries
        union: dict[int, None] = {}
        for c in CATEGORIES:
            union.update(dict.fromkeys(galleries[c].tolist()))
        self.gallery_ids = np.fromiter(union, dtype=np.int64, count=len(union))

    def describe(self) -> dict:
        d = super().describe()
        d.update(
            protocol="VAL: val split, per-category galleries (union of the pairs' images), "
            + ("captions joined by ComposeAE's rule" if self.joined else "one query per caption"),
            gallery_per_category={c: int(len(g)) for c, g in (self.group_galleries or {}).items()},
            skipped_self_pairs=self.skipped_self_pairs,
            skipped_empty_captions=self.skipped_captions,
        )
        return d


class FashionIQJoinedDataset(FashionIQDataset):
    """``fashioniq-joined``: the captions of a pair joined into one query (ComposeAE's rule)."""

    name = "fashioniq-joined"
    joined = True
