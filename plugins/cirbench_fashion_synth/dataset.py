"""The fashion-synth dataset behind the cirbench dataset contract, and its cache.

Evaluation follows FashionIQ as VAL evaluates it (docs/papers.md §0 decisions 2 and 3, §1.4):
one query per caption, the query group is the product category, each category's queries are
ranked against that category's own test gallery, and a query's only correct target is its
target image (identity hits; within a split no two images share all attributes, so this is
also "any image with the target's attributes"). Training uses TIRG's batch classification
loss, as for the fashion datasets (docs/papers.md §2), and draws triplets uniformly.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch

import cirbench
from cirbench import CIRDataset, DatasetContext, Query, Triplet
from cirbench_fashion_synth.generator import GEN_VERSION, generate
from cirbench_fashion_synth.products import Product

GENERATION_SEED = 0
"""The data are fixed by the protocol, not by the training seed."""


NAME = "fashion-synth"


def _params(scale: str, seed: int, size: int) -> dict[str, Any]:
    return {"generator_version": GEN_VERSION, "scale": scale, "seed": seed, "image_size": size}


def _label(scale: str, seed: int, size: int) -> str:
    return f"v{GEN_VERSION}-{scale}-{size}px-seed{seed}"


def cache_folder(cache_dir: Path | str, scale: str, seed: int, size: int) -> Path:
    """Where the data of ``(scale, seed, size)`` is cached under ``cache_dir`` (a
    generated-dataset cache of :mod:`cirbench.data.cache`)."""
    return cirbench.generated_key(NAME, _params(scale, seed, size), _label(scale, seed, size)).folder(cache_dir)


def _check_meta(images: np.ndarray, meta: Mapping[str, Any]) -> None:
    n = meta["num_images"]
    if len(meta.get("products", ())) != n:
        raise ValueError(f"products do not have {n} entries")
    for field in ("triplets", "queries", "splits", "galleries"):
        if field not in meta:
            raise ValueError(f"field {field!r} missing")


def load_or_generate(
    cache_dir: Path | str | None, scale: str, seed: int, size: int
) -> tuple[np.ndarray, dict[str, Any]]:
    """``(images, meta)`` for ``(scale, seed, size)``: from the cache folder when it is
    valid, else generated (and written there when ``cache_dir`` is given)."""
    return cirbench.load_or_generate(
        cache_dir, NAME, _params(scale, seed, size),
        lambda: generate(scale, seed, size),  # looked up at call time (tests count calls)
        image_shape=(size, size, 3),
        check=_check_meta,
        label=_label(scale, seed, size),
    )


class FashionSynthDataset(CIRDataset):
    """Procedurally drawn garments and shoes with relative captions (see the module docstring).

    Image ids ``0 .. num_images-1``: training images first, then test images; all images are
    held in memory at the protocol's image size.
    """

    name = "fashion-synth"
    base_loss = "batch_classification"
    images_in_memory = True  # one uint8 tensor: training keeps it on the device

    def __init__(self, images: np.ndarray, meta: dict[str, Any]):
        size = int(meta["image_size"])
        if images.dtype != np.uint8 or images.shape[1:] != (size, size, 3):
            raise ValueError(f"fashion-synth: images must be uint8 [N, {size}, {size}, 3], got "
                             f"{images.dtype} {images.shape}")
        self.meta = meta
        self.image_size = size
        self._images = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2)
        self.products = [Product.from_list(p) for p in meta["products"]]
        train, test = meta["splits"]["train"], meta["splits"]["test"]
        self.train_ids = np.arange(train["start"], train["stop"], dtype=np.int64)
        self.test_ids = np.arange(test["start"], test["stop"], dtype=np.int64)
        self._galleries = {g: np.asarray(ids, dtype=np.int64) for g, ids in meta["galleries"].items()}
        self._triplets = [Triplet(t["reference"], t["text"], t["target"]) for t in meta["triplets"]]
        self._queries = [Query(q["reference"], q["text"], tuple(q["targets"]), q["group"]) for q in meta["queries"]]

    @property
    def num_images(self) -> int:
        return int(self._images.shape[0])

    def images(self, ids: Sequence[int]) -> torch.Tensor:
        idx = torch.as_tensor(np.asarray(ids, dtype=np.int64).reshape(-1))
        if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= self.num_images):
            raise IndexError(f"fashion-synth: image ids must be in [0, {self.num_images}), got "
                             f"min {int(idx.min())}, max {int(idx.max())}")
        return self._images.index_select(0, idx).contiguous()

    def train_triplets(self) -> list[Triplet]:
        return self._triplets

    def queries(self) -> list[Query]:
        return self._queries

    def has_group_galleries(self) -> bool:
        return True

    def gallery(self, group: str | None = None) -> np.ndarray:
        """``None``: every test image; a category: that category's test images (FashionIQ's
        per-category gallery)."""
        if group is None:
            return self.test_ids.copy()
        if group not in self._galleries:
            raise KeyError(f"fashion-synth: no gallery {group!r}; groups are {sorted(self._galleries)}")
        return self._galleries[group].copy()

    def describe(self) -> dict:
        d = super().describe()
        words = [len(q.text.split()) for q in self._queries]
        d.update(
            generator_version=self.meta["generator_version"],
            scale=self.meta["scale"],
            seed=self.meta["seed"],
            num_train_images=int(len(self.train_ids)),
            gallery_size_per_group={g: int(len(ids)) for g, ids in sorted(self._galleries.items())},
            query_words_min_median_max=[int(min(words)), float(np.median(words)), int(max(words))],
        )
        return d

    # ------------------------------------------------------------------ extras

    def product(self, image_id: int) -> Product:
        """The product drawn in image ``image_id``."""
        return self.products[image_id]

    def query_records(self) -> list[dict[str, Any]]:
        """Generator metadata of each query (changed attributes, caption style, mentions),
        parallel to :meth:`queries`."""
        return self.meta["queries"]

    def triplet_records(self) -> list[dict[str, Any]]:
        """Generator metadata of each training triplet, parallel to :meth:`train_triplets`."""
        return self.meta["triplets"]


def build(ctx: DatasetContext) -> FashionSynthDataset:
    """``DatasetSpec.build``: fashion-synth at ``ctx.protocol``'s ``dataset_scale``, drawn at
    its ``image_size``, generated with :data:`GENERATION_SEED` and cached under
    ``ctx.cache_dir`` (None: generated, not kept)."""
    p = ctx.protocol
    images, meta = load_or_generate(ctx.cache_dir, p.dataset_scale, GENERATION_SEED, p.image_size)
    return FashionSynthDataset(images, meta)

