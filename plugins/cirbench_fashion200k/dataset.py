"""The ``fashion200k`` dataset, read as TIRG's ``Fashion200k`` reads it (docs/papers.md §1.2,
evaluation §1.0).

Layout: ``<root>/labels/*_{train,test}_*.txt`` (VAL's glob), one image per line
``path <TAB> detection_score <TAB> caption`` with ``path`` relative to the root (the images are
under ``<root>/women/{dresses,jackets,pants,skirts,tops}/...``), and ``<root>/test_queries.txt``
(TIRG's, lines ``source_path target_path``).

* Captions are cleaned as TIRG does: strip; ``.`` -> ``dotmark``, ``?`` -> ``questionmark``,
  ``&`` -> ``andmark``, ``*`` -> ``starmark``.
* Training pairs follow TIRG's rule: the parent of caption c is c with one word w removed
  (``c.replace(w, '')``, double spaces collapsed); a parent with at least two child captions
  makes its children's images modifiable; a sample takes a modifiable image (a
  non-modifiable one is replaced by a uniformly drawn modifiable image), a random parent of
  it, a random child caption other than its own, and a random image of that caption. Text:
  ``replace {ws} with {wt}`` (first source word absent from the target, first target word
  absent from the source). TIRG draws these on the fly; cirbench fixes a pool of
  :data:`PAIRS_PER_IMAGE` draws per training image from :data:`POOL_SEED`, so that
  ``train_triplets()`` is finite and every composer trains on the same pairs.
* Test queries: each line of ``test_queries.txt``; text built the same way; correct targets
  are every test image with the target's caption (label-based hits, decision 2); the gallery
  is every test image.
* Images: shorter side resized to the protocol's size, centre crop (TIRG's Resize +
  CenterCrop); loss ``batch_classification`` (docs/papers.md §2).
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
    read_lines,
    read_tsv,
)

URL = "https://github.com/xthan/fashion-200k (test_queries.txt: https://github.com/google/tirg)"
CATEGORIES = ("dresses", "jackets", "pants", "skirts", "tops")
PAIRS_PER_IMAGE = 2
QUERIES = "test_queries.txt"
POOL_SEED = 0


def clean_caption(caption: str) -> str:
    """TIRG's caption post-processing.

    See docs/papers.md §1.2."""
    return (caption.strip().replace(".", "dotmark").replace("?", "questionmark")
            .replace("&", "andmark").replace("*", "starmark"))


def label_files(root: Path, split: str) -> list[Path]:
    """``labels/*_{split}_*.txt``, sorted; a symbolic link leading out of the root raises
    :class:`~cirbench.data.UnsafePathError` (:func:`~cirbench.data.paths.list_inside`).

    See docs/papers.md §1.2."""
    return [Path(root) / rel for rel in list_inside(root, f"labels/*_{split}_*.txt", "file", source="labels/")]


def read_labels(root: Path, split: str) -> list[tuple[str, str, str, int]]:
    """``(path, caption, label file, line number)`` of every image of ``split``.

    See docs/papers.md §1.2."""
    out = []
    files = label_files(root, split)
    if not files:
        raise AnnotationError(Path(root) / "labels", f"no label file matches *_{split}_*.txt")
    for f in files:
        rel = os.path.relpath(f, root)
        for n, parts in read_tsv(root, rel):
            if len(parts) < 3:
                got = "\t".join(parts).strip()
                raise AnnotationError(rel, f"expected 'path<TAB>score<TAB>caption', got {got!r}", n)
            out.append((parts[0].strip(), clean_caption(parts[2]), rel, n))
    return out


def read_queries(root: Path) -> list[tuple[str, str, int]]:
    """``(source path, target path, line number)`` of every line of ``test_queries.txt``."""
    out = []
    for n, line in enumerate(read_lines(root, QUERIES), 1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2:
            raise AnnotationError(QUERIES, f"expected 'source_path target_path', got {line.strip()!r}", n)
        out.append((parts[0], parts[1], n))
    return out


def parent_captions(caption: str) -> list[str]:
    """TIRG's parents of a caption: one word removed by ``str.replace``, spaces collapsed.

    See docs/papers.md §1.2."""
    out = []
    for w in caption.split():
        p = caption.replace(w, "").replace("  ", " ").strip()
        if p not in out:
            out.append(p)
    return out


def different_words(source: str, target: str) -> tuple[str, str]:
    """TIRG's ``get_different_word``: the first source word not in the target and the first
    target word not in the source (the last word when there is none).

    See docs/papers.md §1.2."""
    s_words, t_words = source.split(), target.split()
    ws = next((w for w in s_words if w not in t_words), s_words[-1] if s_words else "")
    wt = next((w for w in t_words if w not in s_words), t_words[-1] if t_words else "")
    return ws, wt


def mod_text(source: str, target: str) -> str:
    """See docs/papers.md §1.2."""
    ws, wt = different_words(source, target)
    return f"replace {ws} with {wt}"


class Fashion200kLayout(DataLayout):
    folder = "fashion200k"
    url = URL
    train_files = "labels/*_train_*.txt (a pair needs two training captions that differ by one word)"
    test_files = "test_queries.txt"
    requirements = (
        Requirement("labels/*_train_*.txt", "training label files"),
        Requirement("labels/*_test_*.txt", "test label files"),
        Requirement(QUERIES, "TIRG's test queries"),
        Requirement("women", "the image folders", kind="dir"),
    )

    def image_entries(self, root: Path) -> list[ImageEntry]:
        labels = [ImageEntry(p, f"{src}:{n}") for s in ("train", "test") for p, _, src, n in read_labels(root, s)]
        return labels + [ImageEntry(e, f"{QUERIES}:{n}") for *pair, n in read_queries(root) for e in pair]

    def published_counts(self) -> list[PublishedCount]:
        def categories(root: Path) -> int:
            return sum((Path(root) / "women" / c).is_dir() for c in CATEGORIES)

        return [PublishedCount(f"category folders women/{{{','.join(CATEGORIES)}}}", len(CATEGORIES),
                               categories, "docs/papers.md §1.2")]


class Fashion200kDataset(LocalImageDataset):
    """``fashion200k`` (see the module docstring).

    See docs/papers.md §1.2."""

    name = "fashion200k"
    version = 1
    base_loss = "batch_classification"
    layout = Fashion200kLayout()
    transform_mode = "center_crop"

    def load(self) -> None:
        captions: dict[int, str] = {}
        split_ids: dict[str, list[int]] = {}
        for split in ("train", "test"):
            ids = []
            for path, caption, src, n in read_labels(self.root, split):
                i = self.index.add(path, f"{src}:{n}")
                if i not in captions:
                    captions[i] = caption
                    ids.append(i)
            split_ids[split] = ids
        self.captions = [captions[i] for i in range(len(self.index))]
        train, test = split_ids["train"], split_ids["test"]
        self.train_ids = np.asarray(train, dtype=np.int64)
        self._make_pool(train)
        self._make_queries(test)

    def _make_pool(self, train: list[int]) -> None:
        caption_images: dict[str, list[int]] = {}
        for i in train:
            caption_images.setdefault(self.captions[i], []).append(i)
        children: dict[str, list[str]] = {}
        for c in caption_images:
            for p in parent_captions(c):
                kids = children.setdefault(p, [])
                if c not in kids:
                    kids.append(c)
        parents: dict[int, list[str]] = {}
        for p, kids in children.items():
            if len(kids) >= 2:
                for c in kids:
                    for i in caption_images[c]:
                        parents.setdefault(i, []).append(p)
        modifiable = [i for i in train if i in parents]
        self.num_modifiable = len(modifiable)
        rng = np.random.default_rng(POOL_SEED)
        triplets: list[Triplet] = []
        if modifiable:
            for _ in range(PAIRS_PER_IMAGE):
                for i in train:
                    src = i if i in parents else modifiable[int(rng.integers(len(modifiable)))]
                    own = self.captions[src]
                    while True:
                        p = parents[src][int(rng.integers(len(parents[src])))]
                        c = children[p][int(rng.integers(len(children[p])))]
                        if c != own:
                            break
                    imgs = caption_images[c]
                    tgt = imgs[int(rng.integers(len(imgs)))]
                    triplets.append(Triplet(src, mod_text(own, c), tgt))
        self.triplets = triplets
        self.train_captions = sorted(caption_images)

    def _make_queries(self, test: list[int]) -> None:
        self.gallery_ids = np.asarray(test, dtype=np.int64)
        test_set = set(test)
        by_caption: dict[str, list[int]] = {}
        for i in test:
            by_caption.setdefault(self.captions[i], []).append(i)
        queries = []
        for *pair, n in read_queries(self.root):
            ids = []
            for entry in pair:
                i = self.index.get(entry)
                if i is None or i not in test_set:
                    raise AnnotationError(QUERIES, f"{entry!r} is not an image of the test label files", n)
                ids.append(i)
            s, t = ids
            cs, ct = self.captions[s], self.captions[t]
            queries.append(Query(s, mod_text(cs, ct), tuple(by_caption[ct])))
        self.test_queries = queries

    def train_texts(self) -> list[str]:
        """TIRG builds its vocabulary from the training captions; the pair texts add
        ``replace`` and ``with``."""
        return sorted(set(self.train_captions) | {t.text for t in self.triplets})

    def describe(self) -> dict:
        d = super().describe()
        d.update(num_train_images=int(len(self.train_ids)), num_modifiable=self.num_modifiable,
                 pairs_per_image=PAIRS_PER_IMAGE, pool_seed=POOL_SEED)
        return d
