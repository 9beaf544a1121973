"""The evaluation (cirbench/evaluate.py) end to end on a toy dataset whose rankings are known by
hand: reference exclusion, ties, several targets, no target, timings."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cirbench import CIRDataset, Composer, ComposerContext, Query, Triplet
from cirbench.metrics import NO_HIT
from cirbench.evaluate import evaluate


class _Toy(CIRDataset):
    """Five flat images: every pixel of image i is 40 * i."""

    name = "toy"

    def __init__(self, queries):
        self._queries = queries

    @property
    def num_images(self):
        return 5

    def images(self, ids):
        return torch.tensor([40 * i for i in ids], dtype=torch.uint8).view(-1, 1, 1, 1).expand(-1, 3, 4, 4).clone()

    def train_triplets(self):
        return [Triplet(0, "a", 2)]

    def queries(self):
        return self._queries

    def gallery(self, group=None):
        return np.arange(5)


class _Oracle(Composer):
    """Decodes an image's id from its pixels; target = one-hot of the id; query = a vector
    given per text (weights over gallery ids)."""

    def __init__(self, query_vectors):
        super().__init__(ComposerContext(None, []))
        self.query_vectors = query_vectors
        self.dummy = torch.nn.Parameter(torch.zeros(1))

    def _ids(self, images):
        pixel = images[:, 0, 0, 0] * 0.229 + 0.485  # undo the ImageNet normalisation
        return (pixel * 255 / 40).round().long()

    def embed_target(self, images):
        return torch.eye(5)[self._ids(images)]

    def compose(self, images, texts):
        return torch.tensor([self.query_vectors[t] for t in texts], dtype=torch.float32)

    def training_loss(self, batch):
        return {"base": self.dummy.sum()}


def test_evaluation_rules_end_to_end():
    queries = [
        Query(0, "answer-2", (2,), "g1"),           # plain hit
        Query(1, "self-then-3-4", (1, 4), "g1"),    # its reference is a target but never counts
        Query(2, "tie-0-3", (3,), "g2"),            # tie between 0 and 3: earlier position first
        Query(0, "any-of-2-4", (2, 4), "g2"),       # any correct target counts
        Query(3, "no-target", (), "g2"),            # no correct target: never a hit
    ]
    vectors = {
        "answer-2": [0.5, 0, 1, 0, 0],
        "self-then-3-4": [0, 1, 0, 0.5, 0.25],
        "tie-0-3": [1, 0, 0, 1, 0],
        "any-of-2-4": [0, 0, 0.5, 0, 1],
        "no-target": [1, 1, 1, 1, 1],
    }
    ds = _Toy(queries)
    ev = evaluate(_Oracle(vectors), ds, ks=(1, 2, 5), batch_size=2, chunk=2)
    assert ev.ranks[:4] == [0, 1, 1, 0]
    assert ev.ranks[4] == NO_HIT
    assert ev.overall == {"R@1": 2 / 5, "R@2": 4 / 5, "R@5": 4 / 5}
    assert ev.groups["g1"] == {"R@1": 0.5, "R@2": 1.0, "R@5": 1.0}
    assert ev.groups["g2"] == pytest.approx({"R@1": 1 / 3, "R@2": 2 / 3, "R@5": 2 / 3})
    assert ev.gallery_size == 5 and ev.num_queries == 5


def test_evaluation_times_embedding_and_ranking_apart():
    queries = [Query(0, "answer-2", (2,), "g1"), Query(1, "tie-0-3", (3,), "g2")]
    vectors = {"answer-2": [0.5, 0, 1, 0, 0], "tie-0-3": [1, 0, 0, 1, 0]}
    ev = evaluate(_Oracle(vectors), _Toy(queries), ks=(1,), batch_size=2, chunk=2)
    # one shared gallery of 5 images (no group galleries) + the 2 queries' references
    assert ev.embedded_images == 5 + 2
    assert ev.embed_seconds > 0 and ev.rank_seconds > 0
    assert ev.embed_seconds + ev.rank_seconds <= ev.seconds
    assert ev.embed_images_per_second == pytest.approx(7 / ev.embed_seconds)
    assert ev.rank_queries_per_second == pytest.approx(2 / ev.rank_seconds)
