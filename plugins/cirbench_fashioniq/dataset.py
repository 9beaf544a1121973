"""The ``fashioniq`` and ``fashioniq-joined`` datasets: FashionIQ read from its canonical layout
(docs/papers.md §1.4), evaluated under VAL's protocol (§0 decision 3).

Layout (the files of XiaoxiaoGuo/fashion-iq):

* ``<root>/captions/cap.{dress,shirt,toptee}.{train,val}.json``: a JSON list of
  ``{"candidate": asin, "target": asin, "captions": [s1, s2]}``;
* ``<root>/image_splits/split.{dress,shirt,toptee}.{train,val}.json``: a JSON list of asins;
* ``<root>/images/<asin>.jpg`` (``.png`` and ``.jpeg`` are accepted when no ``.jpg`` exists).

The ``test`` files have no targets (docs/papers.md §1.4), so evaluation runs on the validation
split, as VAL and SAC do; they are read only by :meth:`FashionIQDataset.hidden_split` for
``cirbench export``, which writes the starter kit's ``{cat}.test.pred.json`` (the test
caption entries, each with ``"ranking"``: its top-50 asins of ``split.{cat}.test.json``).

``fashioniq`` (VAL's protocol, decision 3):

* every caption of a pair is its own query and its own training triplet (a pair gives two);
* hits by image identity: the one correct target is the pair's target (decision 2);
* each query's group is its category (``dress``, ``shirt``, ``toptee``), and each group is
  ranked against its own gallery (``has_group_galleries()``): as VAL, the unique sources and
  targets of that category's validation pairs (not the split file, docs/papers.md §6.3); the
  shared ``gallery()`` is their union;
* the reference is removed from its own ranking (the evaluator's rule, decision 2). A pair
  whose candidate is its target (it could never be answered) and an empty caption are left
  out and counted in ``describe()``.

``fashioniq-joined``: the same pairs, galleries and groups, but one query (and one triplet)
per pair whose text joins the captions by ComposeAE's rule (docs/papers.md §1.4):
``(category + " " + " and it ".join(captions)).lower()``. ComposeAE's merged three-category
gallery and its keeping of the reference in the ranking are not reproduced (decisions 2, 3).

Images: shorter side resized to the protocol's size, centre crop (TIRG's transform, which
ComposeAE uses on FashionIQ); loss ``batch_classification`` (docs/papers.md §3).
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Callable

import numpy as np

from cirbench import (
    AnnotationError,
    DataLayout,
    ImageEntry,
    LocalImageDataset,
    PublishedCount,
    Query,
    Requirement,
    Triplet,
    list_inside,
    read_json,
    read_json_records,
)

URL = "https://github.com/XiaoxiaoGuo/fashion-iq"
CATEGORIES = ("dress", "shirt", "toptee")
SPLITS = ("train", "val")
IMAGE_SUFFIXES = (".jpg", ".png", ".jpeg")

#: Counts computed from the published files, docs/papers.md §1.4: (category, split) -> number.
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
    """ComposeAE's joined query text (docs/papers.md §1.4), captions stripped, empty ones left out."""
    kept = [c.strip() for c in captions if c.strip()]
    return (category + " " + " and it ".join(kept)).lower() if kept else ""


class FashionIQLayout(DataLayout):
    """FashionIQ's files (docs/papers.md §1.4); ``data verify`` compares the pair and split
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

        out = [PublishedCount(f"{s} pairs of {c} ({captions_file(c, s)})", n, pairs(c, s), "docs/papers.md §1.4")
               for (c, s), n in PUBLISHED_PAIRS.items()]
        out += [PublishedCount(f"{s} images of {c} ({split_file(c, s)})", n, split_images(c, s), "docs/papers.md §1.4")
                for (c, s), n in PUBLISHED_SPLIT_IMAGES.items()]
        return out


class FashionIQDataset(LocalImageDataset):
    """``fashioniq``: VAL's protocol, one query per caption (see the module docstring).

    See docs/papers.md §1.4."""

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

    def hidden_split(self, cache_dir: Path | None = None):
        """FashionIQ's ``test`` split for the starter kit's prediction files
        (:func:`build_hidden_split`); evaluation never sees it (no targets)."""
        return build_hidden_split(self, cache_dir)

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
    """``fashioniq-joined``: the captions of a pair joined into one query (ComposeAE's rule).

    See docs/papers.md §1.4."""

    name = "fashioniq-joined"
    joined = True


# --- the hidden test split: the starter kit's prediction files -----------------------------------

HIDDEN_SPLIT = "test"
#: the starter kit's ``Ranker.get_nearest_neighbors`` returns the top 50 (docs/papers.md §1.4)
STARTER_KIT_TOP_K = 50


def read_test_entries(root: Path, category: str) -> list[dict]:
    """The entries of ``cap.{category}.test.json`` (no targets), checked: ``candidate`` a
    non-empty string, ``captions`` a list of strings. Raises :class:`AnnotationError`."""
    rel = captions_file(category, HIDDEN_SPLIT)
    out = []
    for n, item in enumerate(read_json_records(root, rel)):
        if not isinstance(item.get("candidate"), str) or not item["candidate"].strip():
            raise AnnotationError(rel, f"entry {n}: field 'candidate' missing or not a non-empty string")
        caps = item.get("captions")
        if not isinstance(caps, list) or not caps or not all(isinstance(c, str) for c in caps):
            raise AnnotationError(rel, f"entry {n}: field 'captions' missing or not a list of strings")
        out.append(item)
    return out


class FashionIQTestImages(LocalImageDataset):
    """The images of the ``test`` split (each category's ``split.{cat}.test.json`` and the
    test candidates), decoded and cached apart from train/val; no triplets, no test queries."""

    name = "fashioniq-test"
    version = 1
    base_loss = "batch_classification"
    layout = FashionIQLayout()
    transform_mode = "center_crop"

    def load(self) -> None:
        names = image_names(self.root)
        self.asin_of: dict[int, str] = {}
        self.ids_of: dict[str, int] = {}
        galleries = {}
        for c in CATEGORIES:
            gallery = []
            for a in read_split(self.root, c, HIDDEN_SPLIT):
                i = self.index.add(image_entry(a, names), split_file(c, HIDDEN_SPLIT))
                self.asin_of[i], self.ids_of[a] = a, i
                gallery.append(i)
            galleries[c] = np.asarray(list(dict.fromkeys(gallery)), dtype=np.int64)
            for e in read_test_entries(self.root, c):
                a = e["candidate"].strip()
                i = self.index.add(image_entry(a, names), captions_file(c, HIDDEN_SPLIT))
                self.asin_of[i], self.ids_of[a] = a, i
        self.group_galleries = galleries


def build_hidden_split(self: "FashionIQDataset", cache_dir: Path | None = None):
    """FashionIQ's ``test``: one query per entry of ``cap.{cat}.test.json`` (its texts are the
    dataset's: one per caption for ``fashioniq``, whose embeddings are averaged, or the joined
    caption for ``fashioniq-joined``), ranked over ``split.{cat}.test.json`` (the starter kit's
    gallery), the reference left out (cirbench's rule; the kit keeps it); written as the
    kit's ``{cat}.test.pred.json`` (:func:`write_prediction_files`)."""
    from cirbench import HiddenQuery, HiddenSplit, Ranking

    for c in CATEGORIES:
        for rel in (captions_file(c, HIDDEN_SPLIT), split_file(c, HIDDEN_SPLIT)):
            if not (self.root / rel).is_file():
                raise AnnotationError(rel, f"missing: the test files of {URL} are needed for an export")
    images = FashionIQTestImages(self.root, self.protocol, cache_dir)
    queries = []
    entries = {}
    for c in CATEGORIES:
        entries[c] = read_test_entries(self.root, c)
        for n, e in enumerate(entries[c]):
            texts = tuple(self.texts(c, e["captions"]))
            if not texts:
                raise AnnotationError(captions_file(c, HIDDEN_SPLIT), f"entry {n}: every caption is empty")
            queries.append(HiddenQuery(f"{c}:{n}", images.ids_of[e["candidate"].strip()], texts, c))
    return HiddenSplit(
        dataset=self.name, name=HIDDEN_SPLIT, images=images, queries=queries,
        galleries=dict(images.group_galleries), image_names=images.asin_of,
        rankings=(Ranking("ranking", STARTER_KIT_TOP_K),),
        write=functools.partial(write_prediction_files, entries=entries),
    )


def prediction_file_name(category: str) -> str:
    return f"{category}.{HIDDEN_SPLIT}.pred.json"


def write_prediction_files(split, rankings: dict[str, list[list[int]]], out_dir: Path,
                           entries: dict[str, list[dict]]) -> list[Path]:
    """``{cat}.test.pred.json`` per category, as the starter kit's ``eval.py`` writes it: the
    ``entries`` of ``cap.{cat}.test.json`` in order, each with ``"ranking"``: the top-50 asins of
    ``split.{cat}.test.json``. Every file is checked before any is written."""
    from cirbench import check_ranked_names, write_json_checked

    by_key = {q.key: top for q, top in zip(split.queries, rankings["ranking"])}
    out = {}
    for c in CATEGORIES:
        file = prediction_file_name(c)
        allowed = frozenset(split.image_names[int(i)] for i in split.galleries[c])
        records = []
        for n, e in enumerate(entries[c]):
            names = [split.image_names[i] for i in by_key[f"{c}:{n}"]]
            check_ranked_names(file, f"{c}:{n} (candidate {e['candidate']})", names, STARTER_KIT_TOP_K, allowed)
            records.append({**e, "ranking": names})
        out[c] = records
    return [write_json_checked(out_dir / prediction_file_name(c), out[c]) for c in CATEGORIES]
