"""Per-query candidate lists (``Query.candidates``, cirbench/data/contract.py): CIRR's
Recall_subset@K rule in the ranking, the evaluation and the conformance checks."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import cirbench
from cirbench.data import Query
from cirbench.evaluate import evaluate
from cirbench.metrics import NO_HIT, rank_queries
from cirbench.testing import RandomDataset, run_checks
from tests.fixtures.protocols import SMOKE
from tests.fixtures.more_loaders import _quiet  # noqa: F401  (pytest fixtures)


# --- per-query candidate lists (the core extension) ----------------------------------------------------------
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_candidates_rank_like_the_candidate_sub_gallery(data):
    """Property: a query with candidates ranks exactly as it would against the sub-gallery of
    its candidates (in gallery order), whatever the chunk size; queries without candidates
    are unchanged."""
    n_g = data.draw(st.integers(2, 9))
    n_q = data.draw(st.integers(1, 6))
    dim = 3
    vals = st.integers(-2, 2)  # small integer vectors: many exact ties
    g = torch.tensor(data.draw(st.lists(st.lists(vals, min_size=dim, max_size=dim), min_size=n_g, max_size=n_g)),
                     dtype=torch.float32) + 0.01
    q = torch.tensor(data.draw(st.lists(st.lists(vals, min_size=dim, max_size=dim), min_size=n_q, max_size=n_q)),
                     dtype=torch.float32) + 0.01
    ids = [10 + 3 * i for i in range(n_g)]
    refs = [data.draw(st.sampled_from(ids + [999])) for _ in range(n_q)]
    targets = [tuple(data.draw(st.sets(st.sampled_from(ids), min_size=1, max_size=3))) for _ in range(n_q)]
    cands = [data.draw(st.one_of(st.none(), st.sets(st.sampled_from(ids + [5]), max_size=n_g).map(tuple)))
             for _ in range(n_q)]
    chunk = data.draw(st.integers(1, 4))
    got = rank_queries(q, g, ids, refs, targets, chunk=chunk, candidates=cands)
    for i in range(n_q):
        if cands[i] is None:
            sub = list(range(n_g))
        else:
            sub = [j for j, x in enumerate(ids) if x in cands[i]]
        if not sub:
            assert got[i] == NO_HIT
            continue
        alone = rank_queries(q[i:i + 1], g[sub], [ids[j] for j in sub], [refs[i]], [targets[i]])
        assert got[i] == alone[0], (i, cands[i])


def test_candidates_exclude_targets_outside_them():
    g = torch.eye(4)
    q = torch.tensor([[1.0, 0.1, 0, 0], [1.0, 0.1, 0, 0]])
    ranks = rank_queries(q, g, [0, 1, 2, 3], [3, 3], [(0,), (1,)], candidates=[(1, 2), (1, 2)])
    assert ranks.tolist() == [NO_HIT, 0]  # target 0 is no candidate; target 1 is first of {1, 2}
    assert rank_queries(q, g, [0, 1, 2, 3], [3, 3], [(0,), (1,)]).tolist() == [0, 1]
    with pytest.raises(ValueError, match="2 query embeddings, 1 candidate lists"):
        rank_queries(q, g, [0, 1, 2, 3], [3, 3], [(0,), (1,)], candidates=[None])


class _SubsetRandom(RandomDataset):
    """RandomDataset whose odd queries carry a candidate list (their targets and two more)."""

    def __init__(self, image_size: int = 16, bad: bool = False) -> None:
        super().__init__(image_size, num_test_images=10, num_queries=12)
        rng = np.random.default_rng(5)
        out = []
        for i, q in enumerate(self._queries):
            if i % 2:
                others = [int(x) for x in self.test_ids if x not in q.targets and x != q.reference]
                extra = [int(x) for x in rng.choice(others, size=2, replace=False)]
                cands = tuple(extra) if bad and i == 1 else tuple(sorted({*q.targets, *extra}))
                q = dataclasses.replace(q, candidates=cands)
            out.append(q)
        self._queries = out


class _Pooled(cirbench.Composer):
    """Embeddings = pooled pixels (+ a fixed offset for queries): deterministic, no training."""

    def compose(self, images, texts):
        return torch.nn.functional.adaptive_avg_pool2d(images, 2).flatten(1) + 0.3

    def embed_target(self, images):
        return torch.nn.functional.adaptive_avg_pool2d(images, 2).flatten(1)

    def training_loss(self, batch):  # pragma: no cover - never trained here
        raise NotImplementedError


def test_evaluate_honours_candidates():
    ds = _SubsetRandom()
    protocol = dataclasses.replace(SMOKE, image_size=16)
    composer = _Pooled(cirbench.ComposerContext(protocol=protocol, train_texts=ds.train_texts()))
    ev = evaluate(composer, ds, (1, 2, 3), batch_size=5, chunk=3)
    from cirbench.data.model_inputs import normalize_images

    qs = ds.queries()
    q_emb = composer.compose(normalize_images(ds.images([q.reference for q in qs]), "cpu"), [q.text for q in qs])
    gallery = ds.gallery()
    g_emb = composer.embed_target(normalize_images(ds.images(gallery), "cpu"))
    for i, q in enumerate(qs):
        sub = [j for j, x in enumerate(gallery) if q.candidates is None or int(x) in q.candidates]
        want = rank_queries(q_emb[i:i + 1], g_emb[sub], gallery[sub], [q.reference], [q.targets])
        assert ev.ranks[i] == int(want[0])
    assert all(ev.ranks[i] < 4 for i in range(1, 12, 2))  # at most 4 candidates besides the reference


def test_conformance_flags_candidates_without_the_target():
    spec = cirbench.DatasetSpec("subset-bad", lambda ctx: _SubsetRandom(ctx.protocol.image_size, bad=True))
    results = {r.check: r for r in run_checks("dataset", spec)}
    bad = results["check_query_targets_in_gallery"]
    assert bad.status == "failed" and "are not among its candidates" in bad.message
    good = cirbench.DatasetSpec("subset-ok", lambda ctx: _SubsetRandom(ctx.protocol.image_size))
    assert {r.status for r in run_checks("dataset", good)} == {"passed"}


def test_query_candidates_default_keeps_old_records():
    q = Query(1, "x", (2,), "g")
    assert q.candidates is None and q == Query(1, "x", (2,), "g", None)
