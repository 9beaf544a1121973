"""A tiny random dataset that satisfies the dataset contract: what composer checks train on.

:class:`RandomDataset` draws its images (uniform noise), texts (short phrases from a small
vocabulary), triplets and queries from a seeded generator, so it is identical in every run
and needs no plugin, no disk and no download. It passes every dataset check; subclass it
to make a deliberately broken dataset in a test.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from cirbench.data.contract import CIRDataset, Query, Triplet
from cirbench.protocol import Protocol

_VERBS = ("add", "remove", "make", "replace", "move")
_COLOURS = ("red", "blue", "green", "yellow", "gray", "purple")
_SHAPES = ("cube", "sphere", "cylinder", "cone")
_WHERE = ("", " on the left", " at the top", " in the middle")


def _phrase(rng: np.random.Generator) -> str:
    verb = _VERBS[rng.integers(len(_VERBS))]
    colour = _COLOURS[rng.integers(len(_COLOURS))]
    shape = _SHAPES[rng.integers(len(_SHAPES))]
    where = _WHERE[rng.integers(len(_WHERE))]
    return f"{verb} the {colour} {shape}{where}"


class RandomDataset(CIRDataset):
    """Random images, texts, triplets and queries at ``image_size`` (see the module docstring).

    Ids ``0 .. num_train_images-1`` are training images (every triplet uses only those), the
    rest are test images: the gallery, the query references and their targets (one or two
    other test images each). One shared gallery; query groups ``"a"`` and ``"b"``.
    """

    name = "random"

    def __init__(
        self,
        image_size: int = 64,
        *,
        num_train_images: int = 12,
        num_test_images: int = 8,
        num_triplets: int = 24,
        num_queries: int = 8,
        base_loss: str = "soft_triplet",
        seed: int = 0,
    ) -> None:
        if num_train_images < 2 or num_test_images < 3:
            raise ValueError("RandomDataset needs at least 2 training and 3 test images")
        rng = np.random.default_rng(seed)
        n = num_train_images + num_test_images
        self.image_size = int(image_size)
        self.base_loss = base_loss
        self._images = torch.from_numpy(
            rng.integers(0, 256, size=(n, 3, image_size, image_size), dtype=np.uint8)
        )
        self.train_ids = np.arange(num_train_images, dtype=np.int64)
        self.test_ids = np.arange(num_train_images, n, dtype=np.int64)
        self._triplets = []
        for _ in range(num_triplets):
            ref, tgt = rng.choice(self.train_ids, size=2, replace=False)
            self._triplets.append(Triplet(int(ref), _phrase(rng), int(tgt)))
        self._queries = []
        for i in range(num_queries):
            ref = int(rng.choice(self.test_ids))
            others = self.test_ids[self.test_ids != ref]
            k = int(rng.integers(1, 3))
            targets = tuple(sorted(int(t) for t in rng.choice(others, size=k, replace=False)))
            self._queries.append(Query(ref, _phrase(rng), targets, "ab"[i % 2]))

    @classmethod
    def for_protocol(cls, protocol: Protocol, **kwargs) -> "RandomDataset":
        """A random dataset at ``protocol.image_size``; a ``DatasetSpec`` builder may be
        ``lambda protocol, cache_dir: RandomDataset.for_protocol(protocol)``."""
        return cls(protocol.image_size, **kwargs)

    @property
    def num_images(self) -> int:
        return int(self._images.shape[0])

    def images(self, ids: Sequence[int]) -> torch.Tensor:
        idx = torch.as_tensor(np.asarray(ids, dtype=np.int64).reshape(-1))
        return self._images.index_select(0, idx).contiguous()

    def train_triplets(self) -> list[Triplet]:
        return self._triplets

    def queries(self) -> list[Query]:
        return self._queries

    def gallery(self, group: str | None = None) -> np.ndarray:
        return self.test_ids.copy()
