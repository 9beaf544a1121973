"""The CSS datasets ``css`` (3D images) and ``css-2d`` (TIRG's 2D renderings of the same
scenes), both read from TIRG's CSS file (docs/papers.md §1.1, evaluation §1.0).

Ids: training images ``0 .. n_train-1``, then test images. Records follow TIRG's
``CSSDataset``:

* training triplets: every (from, to) pair of every training modification, text ``to_str``;
* :meth:`sample_triplets` is TIRG's sampler: even positions draw a random modification and a
  random pair of it; odd positions reuse the previous source with a different modification
  (consecutive samples share a source);
* test queries: every (from, to) pair of every test modification; correct targets are every
  test image whose caption (``str(label)``) equals the target's (label-based hits, decision 2);
  the gallery is every test image; the group is the modification kind (``add`` / ``remove`` /
  ``change``, from the text's first word).

``css`` serves the 3D PNGs ``images/css_{split}_{idx:06d}.png`` stretched to the protocol's
size (TIRG does not resize them; a square crop would cut objects in the corner cells).
``css-2d`` draws each scene with css-synth's 2D renderer (TIRG's ``generate_2d_image``, 64x64),
resized to the protocol's size; no image files are needed. The 2D images serve queries and
gallery alike (TIRG's released code wires no 2D->3D evaluation, docs/papers.md §1.1).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from cirbench import (
    AnnotationError,
    CIRDataset,
    DataLayout,
    ImageEntry,
    LocalImageDataset,
    Protocol,
    Query,
    Requirement,
    Triplet,
)
from cirbench_css.reader import CSS_FILE, SPLITS, CssSplit, image_entry, query_group, read_css_file
from cirbench_css_synth.generator import CANVAS, render_scene

URL = "https://github.com/google/tirg (CSS: the dataset link in its README)"


class CssLayout(DataLayout):
    """``<root>/css_toy_dataset_novel2_small.dup.npy`` and ``<root>/images/css_{split}_*.png``."""

    folder = "css"
    url = URL
    train_files = f"{CSS_FILE} (train mods)"
    test_files = f"{CSS_FILE} (test mods)"
    requirements = (
        Requirement(CSS_FILE, "TIRG's CSS scenes and modifications (a Python-2 pickle)"),
        Requirement("images/css_train_*.png", "3D training images"),
        Requirement("images/css_test_*.png", "3D test images"),
    )

    def image_entries(self, root: Path) -> list[ImageEntry]:
        splits = read_css_file(Path(root) / CSS_FILE)
        return [ImageEntry(image_entry(s, i), CSS_FILE) for s in SPLITS for i in range(splits[s].num_images)]


class Css2dLayout(DataLayout):
    """Only the CSS file: the 2D images are drawn from its scene descriptions."""

    folder = "css"
    url = URL
    train_files = f"{CSS_FILE} (train mods)"
    test_files = f"{CSS_FILE} (test mods)"
    requirements = (Requirement(CSS_FILE, "TIRG's CSS scenes and modifications (a Python-2 pickle)"),)


class _CssRecords:
    """Triplets, queries, gallery and TIRG's sampler from the parsed CSS file."""

    conformance_expected_failures: dict[str, str] = {}

    def _init_records(self, splits: dict[str, CssSplit]) -> None:
        train, test = splits["train"], splits["test"]
        off = train.num_images
        self.num_train_images = off
        self.captions = train.captions + test.captions
        self.scenes = train.objects + test.objects
        self.triplets = [Triplet(p.source, p.text, p.target) for p in train.pairs]
        self._triplet_mod = [p.mod for p in train.pairs]
        self._by_mod: dict[int, list[int]] = {}
        self._by_source: dict[int, list[int]] = {}
        for i, p in enumerate(train.pairs):
            self._by_mod.setdefault(p.mod, []).append(i)
            self._by_source.setdefault(p.source, []).append(i)
        self._mods = sorted(self._by_mod)
        by_caption: dict[str, list[int]] = {}
        for j, c in enumerate(test.captions):
            by_caption.setdefault(c, []).append(j + off)
        self.test_queries = [
            Query(p.source + off, p.text, tuple(by_caption[test.captions[p.target]]), query_group(p.text))
            for p in test.pairs
        ]
        self.gallery_ids = np.arange(off, off + test.num_images, dtype=np.int64)

    def sample_triplets(self, rng: np.random.Generator, n: int) -> list[Triplet]:
        """TIRG's CSS sampler (docs/papers.md §1.1 "Training sampling")."""
        out: list[Triplet] = []
        last: int | None = None
        for i in range(n):
            if i % 2 == 1 and last is not None:
                src, mod = self.triplets[last].reference, self._triplet_mod[last]
                options = [j for j in self._by_source[src] if self._triplet_mod[j] != mod]
                if options:
                    out.append(self.triplets[options[int(rng.integers(len(options)))]])
                    last = None
                    continue
            pairs = self._by_mod[self._mods[int(rng.integers(len(self._mods)))]]
            last = pairs[int(rng.integers(len(pairs)))]
            out.append(self.triplets[last])
        return out


class CssDataset(_CssRecords, LocalImageDataset):
    """``css``: TIRG's CSS with its 3D images (see the module docstring).

    See docs/papers.md §1.1."""

    name = "css"
    version = 1
    base_loss = "soft_triplet"
    layout = CssLayout()
    transform_mode = "stretch"

    def load(self) -> None:
        splits = read_css_file(self.root / CSS_FILE)
        for s in SPLITS:
            for i in range(splits[s].num_images):
                self.index.add(image_entry(s, i), CSS_FILE)
        self._init_records(splits)


class Css2dDataset(_CssRecords, CIRDataset):
    """``css-2d``: the CSS scenes drawn by TIRG's 2D rules (see the module docstring).

    See docs/papers.md §1.1."""

    name = "css-2d"
    version = 1
    base_loss = "soft_triplet"
    layout = Css2dLayout()

    def __init__(self, root: Path | str, protocol: Protocol, cache_dir: Path | str | None = None) -> None:
        self.root = Path(root)
        self.image_size = protocol.image_size
        self._init_records(read_css_file(self.root / CSS_FILE))
        for i, objs in enumerate(self.scenes[:1] + self.scenes[-1:]):
            try:  # fail early, naming the file, on shapes / colours the renderer does not know
                render_scene(objs)
            except ValueError as exc:
                raise AnnotationError(self.root / CSS_FILE, f"cannot draw a scene: {exc}") from exc

    # DatasetSpec.build: LocalImageDataset's rule (ctx.root, else the environment; checked first)
    build = classmethod(LocalImageDataset.build.__func__)

    @property
    def num_images(self) -> int:
        return len(self.scenes)

    def images(self, ids: Sequence[int]) -> torch.Tensor:
        idx = [int(i) for i in np.asarray(ids, dtype=np.int64).reshape(-1)]
        bad = [i for i in idx if not 0 <= i < self.num_images]
        if bad:
            raise IndexError(f"css-2d: image ids must be in [0, {self.num_images}), got {bad[:5]}")
        if not idx:
            return torch.zeros((0, 3, self.image_size, self.image_size), dtype=torch.uint8)
        drawn = np.stack([render_scene(self.scenes[i]) for i in idx])
        batch = torch.from_numpy(drawn).permute(0, 3, 1, 2).contiguous()
        if self.image_size == CANVAS:
            return batch
        out = F.interpolate(batch.float(), size=(self.image_size, self.image_size), mode="bilinear",
                            align_corners=False, antialias=True)
        return out.round_().clamp_(0, 255).to(torch.uint8)

    def train_triplets(self) -> list[Triplet]:
        return self.triplets

    def queries(self) -> list[Query]:
        return self.test_queries

    def gallery(self, group: str | None = None) -> np.ndarray:
        return self.gallery_ids.copy()

    def describe(self) -> dict:
        d = super().describe()
        d.update(loader_version=self.version, renderer="css-synth render_scene (TIRG 2D, 64x64)")
        return d
