"""The ``mit-states`` dataset, read as TIRG's ``MITStates`` reads it (docs/papers.md §1.3,
evaluation §1.0).

Layout: ``<root>/images/<adj> <noun>/*.jpg``; folders without a space, and folders whose
adjective is ``adj`` (unannotated images), are skipped. Ids: training images, then test
images, each in sorted folder and file order.

* Split by noun: the 49 nouns of :data:`TEST_NOUNS` are the test split, all others train.
* Training pairs follow TIRG's rule: for a source image, a target adjective is drawn
  uniformly from its noun's adjectives (it may be the source's own) and the target is a random
  image of "target_adj noun"; items come in pairs sharing the source, with targets of two
  different adjectives; the text is the target adjective. TIRG draws these on the fly;
  cirbench fixes one such pair per training image (nouns with at least two adjectives), drawn
  from :data:`POOL_SEED`, and :meth:`MitStatesDataset.sample_triplets` keeps each pair
  together (consecutive samples share a source, as in TIRG).
* Test queries: every test image x every other adjective of its noun; text = that adjective;
  correct targets = every test image of "target_adj noun" (label-based hits, decision 2);
  gallery = every test image.
* Images: shorter side resized to the protocol's size, centre crop; loss ``soft_triplet``.
"""

from __future__ import annotations

import glob
from pathlib import Path

import numpy as np

from cirbench import (
    DataLayout,
    DatasetValidationError,
    ImageEntry,
    LocalImageDataset,
    Problem,
    PublishedCount,
    Query,
    Requirement,
    Triplet,
    check_name,
    list_inside,
)

URL = "http://web.mit.edu/phillipi/Public/states_and_transformations/index.html"
POOL_SEED = 0
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")

TEST_NOUNS = (
    "armor", "bracelet", "bush", "camera", "candy", "castle", "ceramic", "cheese", "clock",
    "clothes", "coffee", "fan", "fig", "fish", "foam", "forest", "fruit", "furniture", "garden",
    "gate", "glass", "horse", "island", "laptop", "lead", "lightning", "mirror", "orange",
    "paint", "persimmon", "plastic", "plate", "potato", "road", "rubber", "sand", "shell",
    "sky", "smoke", "steel", "stream", "table", "tea", "tomato", "vacuum", "wax", "wheel",
    "window", "wool",
)
"""TIRG's 49 held-out test nouns (docs/papers.md §1.3)."""


def annotated_folders(root: Path) -> list[tuple[str, str, str]]:
    """``(folder, adj, noun)`` of every annotated class folder under ``images/``, sorted. A
    symbolic link leading out of the root (``images`` or a class folder) raises
    :class:`~cirbench.data.UnsafePathError` naming it (:func:`~cirbench.data.paths.list_inside`).

    See docs/papers.md §1.3."""
    out = []
    for rel in list_inside(root, "images/* *", "dir", source="images/"):
        name = rel.split("/", 1)[1]
        parts = name.split()
        if len(parts) != 2 or parts[0] == "adj":
            continue
        out.append((check_name(name, "images/"), parts[0], parts[1]))
    return out


def class_images(root: Path, folder: str) -> list[str]:
    """Relative paths of the images of class ``folder``, sorted."""
    return [rel for rel in list_inside(root, f"images/{glob.escape(folder)}/*", "file", source=f"images/{folder}/")
            if rel.lower().endswith(IMAGE_SUFFIXES)]


class MitStatesLayout(DataLayout):
    folder = "mit-states"
    url = URL
    train_files = "images/<adj> <noun>/ of the training nouns (all but TIRG's 49 test nouns)"
    test_files = "images/<adj> <noun>/ of TIRG's 49 test nouns (a query needs a test noun with two adjectives)"
    requirements = (
        Requirement("images/* *", "class folders named '<adj> <noun>'", kind="dir"),
        Requirement("images/* */*.jpg", "images"),
    )

    def image_entries(self, root: Path) -> list[ImageEntry]:
        return [ImageEntry(p, f"images/{folder}/") for folder, _, _ in annotated_folders(root)
                for p in class_images(root, folder)]

    def published_counts(self) -> list[PublishedCount]:
        def test_nouns(root: Path) -> int:
            return len({noun for _, _, noun in annotated_folders(root) if noun in TEST_NOUNS})

        return [PublishedCount("TIRG's test nouns with images", len(TEST_NOUNS), test_nouns,
                               "docs/papers.md §1.3")]


class MitStatesDataset(LocalImageDataset):
    """``mit-states`` (see the module docstring).

    See docs/papers.md §1.3."""

    name = "mit-states"
    version = 1
    base_loss = "soft_triplet"
    layout = MitStatesLayout()
    transform_mode = "center_crop"

    def load(self) -> None:
        folders = annotated_folders(self.root)
        ids: dict[str, list[int]] = {"train": [], "test": []}
        self.adj: list[str] = []
        self.noun: list[str] = []
        for split in ("train", "test"):
            for folder, adj, noun in folders:
                if (noun in TEST_NOUNS) != (split == "test"):
                    continue
                for entry in class_images(self.root, folder):
                    i = self.index.add(entry, f"images/{folder}/")
                    ids[split].append(i)
                    self.adj.append(adj)
                    self.noun.append(noun)
        self.captions = [f"{a} {n}" for a, n in zip(self.adj, self.noun)]
        self._make_pool(ids["train"])
        self._make_queries(ids["test"])

    def _index(self, ids: list[int]) -> tuple[dict[str, list[int]], dict[str, list[str]]]:
        by_caption: dict[str, list[int]] = {}
        noun_adjs: dict[str, list[str]] = {}
        for i in ids:
            by_caption.setdefault(self.captions[i], []).append(i)
            adjs = noun_adjs.setdefault(self.noun[i], [])
            if self.adj[i] not in adjs:
                adjs.append(self.adj[i])
        return by_caption, noun_adjs

    def _make_pool(self, train: list[int]) -> None:
        by_caption, noun_adjs = self._index(train)
        rng = np.random.default_rng(POOL_SEED)
        triplets: list[Triplet] = []
        for i in train:
            adjs = noun_adjs[self.noun[i]]
            if len(adjs) < 2:
                continue  # TIRG would loop forever: no two different target adjectives

            def draw() -> int:
                imgs = by_caption[f"{adjs[int(rng.integers(len(adjs)))]} {self.noun[i]}"]
                return imgs[int(rng.integers(len(imgs)))]

            while True:
                t1, t2 = draw(), draw()
                if self.adj[t1] != self.adj[t2]:
                    break
            triplets += [Triplet(i, self.adj[t1], t1), Triplet(i, self.adj[t2], t2)]
        if not triplets:
            shown = ", ".join(sorted(by_caption)[:5]) + (", ..." if len(by_caption) > 5 else "")
            raise DatasetValidationError(self.name, [Problem("images/", (
                f"no training noun has two adjectives (images/ has {len(by_caption)} class folder(s) with "
                f"images for {len(noun_adjs)} training noun(s){': ' + shown if shown else ''}): cannot build "
                "training pairs (TIRG pairs two images of one noun with different adjectives); is the "
                "dataset extracted in full?"))], self.root)
        self.triplets = triplets
        self.train_ids = np.asarray(train, dtype=np.int64)
        self.train_captions = sorted(by_caption)

    def _make_queries(self, test: list[int]) -> None:
        by_caption, noun_adjs = self._index(test)
        self.gallery_ids = np.asarray(test, dtype=np.int64)
        self.test_queries = [
            Query(i, adj, tuple(by_caption[f"{adj} {self.noun[i]}"]))
            for i in test for adj in noun_adjs[self.noun[i]] if adj != self.adj[i]
        ]

    def sample_triplets(self, rng: np.random.Generator, n: int) -> list[Triplet]:
        """Pairs sharing a source, as TIRG's sampler yields them.

        See docs/papers.md §1.3."""
        out: list[Triplet] = []
        while len(out) < n:
            k = int(rng.integers(len(self.triplets) // 2))
            out += self.triplets[2 * k:2 * k + 2]
        return out[:n]

    def train_texts(self) -> list[str]:
        """TIRG builds its vocabulary from the training "adj noun" captions."""
        return sorted(set(self.train_captions) | {t.text for t in self.triplets})

    def describe(self) -> dict:
        d = super().describe()
        d.update(num_train_images=int(len(self.train_ids)), pool_seed=POOL_SEED)
        return d
