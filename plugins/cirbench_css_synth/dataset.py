"""The css-synth dataset: generated CSS-like scenes behind the cirbench dataset contract.

Evaluation follows TIRG's CSS rules (docs/papers.md §1.0, §1.1): the gallery is every test
image; a query's correct targets are every gallery image whose scene equals the target's
(label-based hits; the engine removes the reference itself). Query groups are the
modification kinds ``add`` / ``remove`` / ``change``. Training draws triplets with TIRG's CSS
sampler (docs/papers.md §1.1 "Training sampling"): a random (source, target) pair, then the
same source with a different modification, so consecutive samples share a source.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from cirbench import CIRDataset, DatasetContext, Query, Triplet
from cirbench_css_synth.cache import load_or_generate
from cirbench_css_synth.generator import CANVAS, Modification, Scene, SceneObject

GENERATION_SEED = 0
"""The data are fixed by the protocol, not by the training seed."""


class CssSynthDataset(CIRDataset):
    """CSS-like synthetic scenes rendered with TIRG's 2D rules (see the module docstring).

    Image ids ``0 .. num_images-1`` are global: training images first, then test images.
    All images are held in memory as one ``uint8 [N, 3, 64, 64]`` tensor; :meth:`images`
    resizes batches to ``image_size`` (bilinear, antialiased) when it is not 64.
    """

    name = "css-synth"
    base_loss = "soft_triplet"
    images_in_memory = True  # one uint8 tensor: training keeps it on the device

    def __init__(self, images: np.ndarray, meta: dict[str, Any], image_size: int = CANVAS):
        if images.dtype != np.uint8 or images.shape[1:] != (CANVAS, CANVAS, 3):
            raise ValueError(
                f"css-synth: images must be uint8 [N, {CANVAS}, {CANVAS}, 3], got "
                f"{images.dtype} {images.shape}"
            )
        if image_size < 1:
            raise ValueError(f"css-synth: image_size must be >= 1, got {image_size}")
        self.meta = meta
        self.image_size = int(image_size)
        # [N, H, W, 3] -> [N, 3, H, W] as a view; batches are made contiguous on the way out.
        self._images = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2)
        self.labels: list[str] = list(meta["labels"])
        self._scenes_raw: list[list[list[Any]]] = meta["scenes"]
        train, test = meta["splits"]["train"], meta["splits"]["test"]
        self.train_ids = np.arange(train["start"], train["stop"], dtype=np.int64)
        self.test_ids = np.arange(test["start"], test["stop"], dtype=np.int64)
        self.train_sources = np.asarray(train["sources"], dtype=np.int64)
        self.test_sources = np.asarray(test["sources"], dtype=np.int64)

        self._triplets = [
            Triplet(t["reference"], t["text"], t["target"]) for t in meta["triplets"]
        ]
        self._queries = [
            Query(q["reference"], q["text"], tuple(q["targets"]), q["group"])
            for q in meta["queries"]
        ]
        # TIRG's imgid2modtarget: for each training source, the indices of its triplets.
        self._by_source: dict[int, list[int]] = {}
        for i, t in enumerate(self._triplets):
            self._by_source.setdefault(t.reference, []).append(i)

    # ------------------------------------------------------------------ contract

    @property
    def num_images(self) -> int:
        return int(self._images.shape[0])

    def images(self, ids: Sequence[int]) -> torch.Tensor:
        idx = torch.as_tensor(np.asarray(ids, dtype=np.int64).reshape(-1))
        if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= self.num_images):
            raise IndexError(
                f"css-synth: image ids must be in [0, {self.num_images}), got "
                f"min {int(idx.min())}, max {int(idx.max())}"
            )
        batch = self._images.index_select(0, idx).contiguous()
        if self.image_size == CANVAS:
            return batch
        resized = F.interpolate(
            batch.float(),
            size=(self.image_size, self.image_size),
            mode="bilinear",
            align_corners=False,
            antialias=True,
        )
        return resized.round_().clamp_(0, 255).to(torch.uint8)

    def train_triplets(self) -> list[Triplet]:
        return self._triplets

    def queries(self) -> list[Query]:
        return self._queries

    def gallery(self, group: str | None = None) -> np.ndarray:
        """Every test image, for every group (one shared gallery, as in TIRG's CSS test)."""
        return self.test_ids.copy()

    def sample_triplets(self, rng: np.random.Generator, n: int) -> list[Triplet]:
        """TIRG's CSS sampler: even positions draw a uniformly random training pair; each
        odd position reuses the previous source with a different modification."""
        out: list[Triplet] = []
        last: int | None = None
        for i in range(n):
            if i % 2 == 1 and last is not None:
                options = [j for j in self._by_source[self._triplets[last].reference] if j != last]
                if options:
                    out.append(self._triplets[options[int(rng.integers(len(options)))]])
                    last = None
                    continue
            last = int(rng.integers(len(self._triplets)))
            out.append(self._triplets[last])
        return out

    def describe(self) -> dict:
        d = super().describe()
        d.update(
            generator_version=self.meta["generator_version"],
            scale=self.meta["scale"],
            seed=self.meta["seed"],
            num_train_images=int(len(self.train_ids)),
            num_distinct_test_labels=len({self.labels[i] for i in self.test_ids}),
        )
        return d

    # ------------------------------------------------------------------ extras

    def scene(self, image_id: int) -> Scene:
        """The objects of image ``image_id``."""
        return tuple(SceneObject.from_list(o) for o in self._scenes_raw[image_id])

    def query_modifications(self) -> list[Modification]:
        """The structured modification of each query, parallel to :meth:`queries`."""
        return [Modification.from_dict(q["mod"]) for q in self.meta["queries"]]

    def triplet_modifications(self) -> list[Modification]:
        """The structured modification of each training triplet, parallel to
        :meth:`train_triplets`."""
        return [Modification.from_dict(t["mod"]) for t in self.meta["triplets"]]


def build(ctx: DatasetContext) -> CssSynthDataset:
    """``DatasetSpec.build``: the css-synth dataset at ``ctx.protocol``'s ``dataset_scale``
    and ``image_size``, generated with :data:`GENERATION_SEED` and cached under
    ``ctx.cache_dir`` (None: generated, not kept)."""
    images, meta = load_or_generate(ctx.cache_dir, ctx.protocol.dataset_scale, GENERATION_SEED)
    return CssSynthDataset(images, meta, image_size=ctx.protocol.image_size)
