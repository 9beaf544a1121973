"""The ``birds-to-words`` dataset: Birds-to-Words read from its published TSV (docs/papers.md §1.6),
under a retrieval protocol cirbench defines (none is published; SAC reports R@10/R@50 without
stating one, docs/papers.md §6.10).

Layout:

* ``<root>/birds-to-words-v1.0.tsv``: 11 tab-separated columns (img1ObservationURL,
  img1ImgURL, img1Species, img1Selection, img2ObservationURL, img2ImgURL, img2Species,
  img2Selection, split, annN, description); a header line starting ``img1ObservationURL`` is
  skipped;
* the images, which the TSV gives only as URLs, downloaded under ``<root>/images/`` at
  ``<host>/<path>`` of their URL (query and fragment dropped): what
  ``wget --force-directories --directory-prefix images URL`` writes, e.g.
  ``images/static.inaturalist.org/photos/123/medium.jpg``. An image is identified by its URL.

Protocol (cirbench's, documented here and in the README):

* direction: image 1 + description -> image 2 (the description says how the second bird
  differs from the first); every row (annotation) is its own query or triplet, so a pair with
  several annotations gives several;
* training triplets: the rows of split ``train``; test queries: the rows of split ``test``;
  the ``val`` rows are not used (cirbench does no model selection);
* one correct target, image 2 (identity hits, decision 2); a row whose two images are the
  same is left out (counted in ``describe()``);
* gallery: every image of a test row (image 1 or image 2), each once; the reference is
  removed from its own ranking (the evaluator's rule).

Images: shorter side resized to the protocol's size, centre crop; loss
``batch_classification`` (as on the other identity-hit datasets).
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

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
    read_tsv,
)

URL = "https://github.com/google-research-datasets/birds-to-words"
TSV = "birds-to-words-v1.0.tsv"
COLUMNS = ("img1ObservationURL", "img1ImgURL", "img1Species", "img1Selection", "img2ObservationURL",
           "img2ImgURL", "img2Species", "img2Selection", "split", "annN", "description")
SPLITS = ("train", "val", "test")


def image_entry(url: str, source: str, line: int) -> str:
    """The local file of an image URL: ``images/<host>/<path>`` (see the module docstring)."""
    parts = urlsplit(url.strip())
    if not parts.netloc or not parts.path.strip("/"):
        raise AnnotationError(source, f"image URL {url!r} has no host or no path", line)
    return f"images/{parts.netloc}/{parts.path.strip('/')}"


def read_rows(root: Path) -> list[tuple[str, str, str, str, int]]:
    """``(image 1 entry, image 2 entry, split, description, line)`` of every row of the TSV;
    raises :class:`AnnotationError` naming the file, line and column for bad content.

    See docs/papers.md §1.6."""
    out = []
    for n, fields in read_tsv(root, TSV):
        if n == 1 and fields[0].strip() == COLUMNS[0]:
            continue  # the header
        if len(fields) != len(COLUMNS):
            raise AnnotationError(TSV, f"expected {len(COLUMNS)} tab-separated columns, got {len(fields)}", n)
        row = dict(zip(COLUMNS, (f.strip() for f in fields)))
        if row["split"] not in SPLITS:
            raise AnnotationError(TSV, f"column 'split' is {row['split']!r}, expected one of {SPLITS}", n)
        if not row["description"]:
            raise AnnotationError(TSV, "column 'description' is empty", n)
        out.append((image_entry(row["img1ImgURL"], TSV, n), image_entry(row["img2ImgURL"], TSV, n),
                    row["split"], row["description"], n))
    return out


class BirdsToWordsLayout(DataLayout):
    """Birds-to-Words' TSV and the downloaded images. ``data verify`` reports the rows and
    images per split; docs/papers.md gives no count of the TSV itself (SAC quotes 12,770 train /
    3,151 test images for its own split, §4), so they are reported, not compared."""

    folder = "birds-to-words"
    url = URL
    train_files = f"{TSV} (rows of split train)"
    test_files = f"{TSV} (rows of split test)"
    requirements = (
        Requirement(TSV, "the annotations"),
        Requirement("images", "the downloaded images, images/<host>/<path of the URL>", kind="dir"),
    )

    def image_entries(self, root: Path) -> list[ImageEntry]:
        return [ImageEntry(e, f"{TSV}:{n}") for a, b, s, _, n in read_rows(root) if s in ("train", "test")
                for e in (a, b)]

    def published_counts(self) -> list[PublishedCount]:
        def rows(split: str):
            return lambda root: sum(s == split for _, _, s, _, _ in read_rows(root))

        def images(split: str):
            return lambda root: len({e for a, b, s, _, _ in read_rows(root) if s == split for e in (a, b)})

        sac = "docs/papers.md §1.6 (SAC quotes 12,770 train / 3,151 test images for its split, §4)"
        return [PublishedCount(f"{s} rows (annotations)", None, rows(s), sac) for s in SPLITS] + [
            PublishedCount(f"distinct {s} images", None, images(s), sac) for s in ("train", "test")]


class BirdsToWordsDataset(LocalImageDataset):
    """``birds-to-words`` (see the module docstring for the protocol).

    See docs/papers.md §1.6."""

    name = "birds-to-words"
    version = 1
    base_loss = "batch_classification"
    layout = BirdsToWordsLayout()
    transform_mode = "center_crop"

    def load(self) -> None:
        self.skipped_self_pairs = 0
        self.val_rows = 0
        triplets, queries = [], []
        gallery: dict[int, None] = {}
        for a, b, split, text, n in read_rows(self.root):
            if split == "val":
                self.val_rows += 1
                continue
            s, t = self.index.add(a, f"{TSV}:{n}"), self.index.add(b, f"{TSV}:{n}")
            if split == "test":
                gallery[s] = gallery[t] = None
            if s == t:
                self.skipped_self_pairs += 1
            elif split == "train":
                triplets.append(Triplet(s, text, t))
            else:
                queries.append(Query(s, text, (t,)))
        self.triplets = triplets
        self.test_queries = queries
        self.gallery_ids = np.fromiter(gallery, dtype=np.int64, count=len(gallery))

    def describe(self) -> dict:
        d = super().describe()
        d.update(protocol="image 1 + description -> image 2; train rows train, test rows query; "
                 "gallery = every test-split image",
                 skipped_self_pairs=self.skipped_self_pairs, unused_val_rows=self.val_rows)
        return d
