"""The ``shoes`` dataset: Shoes relative captions read from their canonical layout
(docs/papers.md §1.5), evaluated as VAL does, with identity hits (§0 decision 2).

Layout (the files of XiaoxiaoGuo/fashion-retrieval's ``dataset/`` folder, plus the images of
the Attribute Discovery dataset):

* ``<root>/relative_captions_shoes.json``: a JSON list of ``{"ImageName": target,
  "ReferenceImageName": reference, "RelativeCaption": text}``;
* ``<root>/train_im_names.txt`` and ``<root>/eval_im_names.txt``: one image name per line;
* the images, named by their file name (``img_womens_clogs_851.jpg``), anywhere under the
  Attribute Discovery ``womens_*`` folders below the root (e.g.
  ``<root>/attributedata/womens_clogs/0/img_womens_clogs_851.jpg``); a name must occur once.

Protocol:

* training triplets: the captions whose two images are both training images (8,990 in the
  published files); test queries: those whose two images are both eval images (1,761);
  a caption whose reference is its target is left out (counted in ``describe()``);
* one correct target per query, the caption's target image (identity hits);
* gallery: every eval image (``eval_im_names.txt``, 4,658) and every image of an eval query.
  VAL adds its own ``shoes-test-all.txt`` list, which is not part of the published files;
  the eval names are the test split SAC quotes (docs/papers.md §4);
* the reference is removed from its own ranking (the evaluator's rule).

Images: shorter side resized to the protocol's size, centre crop; loss
``batch_classification`` (as on the other fashion datasets, docs/papers.md §2-3).
"""

from __future__ import annotations

import os
from pathlib import Path

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
    read_json_records,
    read_lines,
)

URL = ("https://github.com/XiaoxiaoGuo/fashion-retrieval/tree/master/dataset (images: the Attribute "
       "Discovery dataset, http://tamaraberg.com/attributesDataset/index.html)")
CAPTIONS = "relative_captions_shoes.json"
TRAIN_NAMES = "train_im_names.txt"
EVAL_NAMES = "eval_im_names.txt"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
FIELDS = ("ReferenceImageName", "ImageName", "RelativeCaption")
IMAGE_SEARCH = "**/womens_*/**"  # every file below a womens_* folder


def read_captions(root: Path) -> list[tuple[str, str, str]]:
    """``(reference, target, caption)`` of every entry of the captions file; raises
    :class:`AnnotationError` naming the file, the entry and the field for bad content."""
    out = []
    for n, item in enumerate(read_json_records(root, CAPTIONS)):
        for key in FIELDS:
            if not isinstance(item.get(key), str) or not item[key].strip():
                raise AnnotationError(CAPTIONS, f"entry {n}: field {key!r} missing or not a non-empty string")
        out.append((item["ReferenceImageName"].strip(), item["ImageName"].strip(), item["RelativeCaption"].strip()))
    return out


def read_names(root: Path, rel: str) -> list[str]:
    """The image names of a name list (blank lines skipped)."""
    return [line.strip() for line in read_lines(root, rel) if line.strip()]


def image_paths(root: Path) -> dict[str, str]:
    """Image file name -> path relative to the root, for every image under a ``womens_*``
    folder (symbolic links inside the root followed, each real folder once). Raises
    :class:`AnnotationError` when a name occurs twice (it would be ambiguous), and
    :class:`~cirbench.data.UnsafePathError` for a symbolic link leading out of the root met
    on the search (:func:`~cirbench.data.paths.list_inside`)."""
    found: dict[str, str] = {}
    for rel in list_inside(root, IMAGE_SEARCH, "file", source=f"the search for {IMAGE_SEARCH}"):
        name = rel.rsplit("/", 1)[-1]
        if os.path.splitext(name)[1].lower() not in IMAGE_SUFFIXES:
            continue
        if name in found:
            raise AnnotationError(rel, f"image name {name!r} also found at {found[name]}; names must be unique")
        found[name] = rel
    return found


class ShoesLayout(DataLayout):
    """Shoes' files (docs/papers.md §1.5); ``data verify`` compares the caption, name-list and
    pair counts with the published ones."""

    folder = "shoes"
    url = URL
    train_files = f"{CAPTIONS} (captions whose two images are in {TRAIN_NAMES})"
    test_files = f"{CAPTIONS} (captions whose two images are in {EVAL_NAMES})"
    requirements = (
        Requirement(CAPTIONS, "the relative captions"),
        Requirement(TRAIN_NAMES, "training image names"),
        Requirement(EVAL_NAMES, "eval image names"),
        Requirement("**/womens_*", "the Attribute Discovery image folders", kind="dir"),
    )

    def image_entries(self, root: Path) -> list[ImageEntry]:
        paths = image_paths(root)
        out = []
        for ref, tgt, _ in read_captions(root):
            out += [ImageEntry(paths.get(ref, ref), CAPTIONS), ImageEntry(paths.get(tgt, tgt), CAPTIONS)]
        for rel in (TRAIN_NAMES, EVAL_NAMES):
            out += [ImageEntry(paths.get(n, n), rel) for n in read_names(root, rel)]
        return out

    def published_counts(self) -> list[PublishedCount]:
        def pairs_in(rel: str):
            def count(root: Path) -> int:
                names = set(read_names(root, rel))
                return sum(r in names and t in names for r, t, _ in read_captions(root))
            return count

        src = "docs/papers.md §1.5"
        return [
            PublishedCount(f"captions in {CAPTIONS}", 10_751, lambda root: len(read_captions(root)), src),
            PublishedCount(f"names in {TRAIN_NAMES}", 10_000, lambda root: len(read_names(root, TRAIN_NAMES)), src),
            PublishedCount(f"names in {EVAL_NAMES}", 4_658, lambda root: len(read_names(root, EVAL_NAMES)), src),
            PublishedCount("captions with both images in train", 8_990, pairs_in(TRAIN_NAMES), src),
            PublishedCount("captions with both images in eval", 1_761, pairs_in(EVAL_NAMES), src),
        ]


class ShoesDataset(LocalImageDataset):
    """``shoes`` (see the module docstring).

    See docs/papers.md §1.5."""

    name = "shoes"
    version = 1
    base_loss = "batch_classification"
    layout = ShoesLayout()
    transform_mode = "center_crop"

    def _add(self, name: str, paths: dict[str, str], source: str) -> int:
        rel = paths.get(name)
        if rel is None:
            raise AnnotationError(source, f"image {name!r} is not under any womens_* folder of {self.root}")
        return self.index.add(rel, source)

    def load(self) -> None:
        paths = image_paths(self.root)
        captions = read_captions(self.root)
        train, evals = set(read_names(self.root, TRAIN_NAMES)), read_names(self.root, EVAL_NAMES)
        eval_set = set(evals)
        self.skipped_self_pairs = 0
        self.cross_split_pairs = 0
        triplets, pending = [], []
        for n, (ref, tgt, text) in enumerate(captions):
            where = f"{CAPTIONS} entry {n}"
            if ref == tgt:
                self.skipped_self_pairs += 1
            elif ref in train and tgt in train:
                triplets.append(Triplet(self._add(ref, paths, where), text, self._add(tgt, paths, where)))
            elif ref in eval_set and tgt in eval_set:
                pending.append((ref, tgt, text, where))
            else:
                self.cross_split_pairs += 1
        gallery: dict[int, None] = {}
        for name in evals:
            gallery[self._add(name, paths, EVAL_NAMES)] = None
        queries = []
        for ref, tgt, text, where in pending:
            s, t = self._add(ref, paths, where), self._add(tgt, paths, where)
            gallery[s] = gallery[t] = None
            queries.append(Query(s, text, (t,)))
        self.triplets = triplets
        self.test_queries = queries
        self.gallery_ids = np.fromiter(gallery, dtype=np.int64, count=len(gallery))

    def describe(self) -> dict:
        d = super().describe()
        d.update(skipped_self_pairs=self.skipped_self_pairs, cross_split_pairs=self.cross_split_pairs,
                 gallery="every eval image (eval_im_names.txt) and every image of an eval query")
        return d
