"""Property and hand-made tests for :mod:`cirbench.metrics` (docs/papers.md §1.0, §0.2).

Ranking rules under test (module docstring of cirbench.metrics):
cosine scores computed in float64 and rounded to float32; the reference image removed by id;
ties broken by gallery position (earlier first); NO_HIT when no correct target is left.

Two kinds of generated data are used:

* *small-integer* embeddings (entries in -2..2): many exact ties and zero vectors, which
  exercise the tie rule; the cosines of such vectors are never close to a float32 rounding
  midpoint, so any correct float64 computation rounds to the same float32 score.
* *tie-free* random float embeddings: every row's scores are pairwise well separated, so a
  property that only holds without ties (gallery permutation, rescaling, torchmetrics) is
  asserted exactly.
"""

from __future__ import annotations

import math
import struct

import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from cirbench.metrics import (
    NO_HIT,
    ZERO_TOLERANCE,
    cosine_scores,
    format_recalls,
    rank_queries,
    ranks_from_scores,
    recall_at_k,
    recall_by_group,
)

SETTINGS = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
LIGHT = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
OUTSIDE_IDS = list(range(1000, 1006))  # ids that are never in a generated gallery


# --------------------------------------------------------------------------- helpers


def f32(x: float) -> float:
    """Round a Python float to the nearest float32 (what cosine_scores returns)."""
    return struct.unpack("f", struct.pack("f", x))[0]


def math_cosine(a: list[float], b: list[float]) -> float:
    """Cosine in pure Python, normalising as F.normalize does (divide by max(norm, 1e-12)):
    a zero vector has cosine 0 with everything, a vector of norm below 1e-12 is not scaled
    up to unit length."""
    na = max(math.sqrt(sum(x * x for x in a)), 1e-12)
    nb = max(math.sqrt(sum(x * x for x in b)), 1e-12)
    s = sum((x / na) * (y / nb) for x, y in zip(a, b))
    return 0.0 if abs(s) < ZERO_TOLERANCE else s  # documented: rounding residue is 0


def brute_force_ranks(q_emb, g_emb, gallery_ids, reference_ids, targets) -> list[int]:
    """The documented ranking, one query at a time, in plain Python."""
    g_rows = g_emb.tolist()
    gallery_ids = [int(i) for i in gallery_ids]
    out = []
    for qi, q in enumerate(q_emb.tolist()):
        ref = int(reference_ids[qi])
        scores = [f32(math_cosine(q, g)) for g in g_rows]
        order = [p for p in range(len(g_rows)) if gallery_ids[p] != ref]
        order.sort(key=lambda p: (-scores[p], p))  # higher score first, then earlier position
        correct = {int(t) for t in targets[qi]} - {ref}
        rank = next((r for r, p in enumerate(order) if gallery_ids[p] in correct), NO_HIT)
        out.append(rank)
    return out


def brute_force_ranks_from_scores(scores, target_mask, exclude_mask) -> list[int]:
    out = []
    for s, t, e in zip(scores.tolist(), target_mask.tolist(), exclude_mask.tolist()):
        order = sorted((p for p in range(len(s)) if not e[p]), key=lambda p: (-s[p], p))
        out.append(next((r for r, p in enumerate(order) if t[p]), NO_HIT))
    return out


def min_row_gap(q_emb: torch.Tensor, g_emb: torch.Tensor) -> float:
    """Smallest difference between two scores of the same query (float64 cosines)."""
    s = torch.nn.functional.normalize(q_emb.double(), dim=1) @ torch.nn.functional.normalize(
        g_emb.double(), dim=1
    ).t()
    if s.shape[1] < 2:
        return math.inf
    srt = s.sort(dim=1).values
    return float((srt[:, 1:] - srt[:, :-1]).min())


@st.composite
def retrieval_problems(draw, tie_free: bool = False, max_q: int = 8, max_n: int = 12):
    """A random retrieval problem: embeddings, unique gallery ids, references, target sets.

    References are mostly gallery ids (sometimes an id outside the gallery); target sets mix
    gallery ids, outside ids and sometimes the reference itself.
    """
    n = draw(st.integers(1, max_n))
    n_q = draw(st.integers(1, max_q))
    if tie_free:
        d = draw(st.integers(2, 5))
        seed = draw(st.integers(0, 2**31 - 1))
        gen = torch.Generator().manual_seed(seed)
        q_emb = torch.randn(n_q, d, generator=gen)
        g_emb = torch.randn(n, d, generator=gen)
        assume(min_row_gap(q_emb, g_emb) > 1e-4)
    else:
        d = draw(st.integers(1, 4))
        ints = st.integers(-2, 2)
        q_emb = torch.tensor(draw(st.lists(st.lists(ints, min_size=d, max_size=d), min_size=n_q, max_size=n_q)), dtype=torch.float32)
        g_emb = torch.tensor(draw(st.lists(st.lists(ints, min_size=d, max_size=d), min_size=n, max_size=n)), dtype=torch.float32)
    gallery_ids = draw(st.lists(st.integers(0, 200), min_size=n, max_size=n, unique=True))
    pool = gallery_ids + OUTSIDE_IDS
    reference_ids, targets = [], []
    for _ in range(n_q):
        ref = draw(st.one_of(st.sampled_from(gallery_ids), st.sampled_from(OUTSIDE_IDS)))
        tgt = draw(st.lists(st.sampled_from(pool), max_size=4))
        if draw(st.booleans()):
            tgt.append(ref)
        reference_ids.append(ref)
        targets.append(tuple(tgt))
    return q_emb, g_emb, gallery_ids, reference_ids, targets


def rank(problem, chunk: int = 1024) -> torch.Tensor:
    q, g, gids, refs, tgts = problem
    return rank_queries(q, g, gids, refs, tgts, chunk=chunk)


# --------------------------------------------------------------------------- cosine_scores


def test_cosine_scores_hand_case():
    q = torch.tensor([[3.0, 4.0], [0.0, 0.0]])
    g = torch.tensor([[1.0, 0.0], [0.0, 2.0], [-3.0, -4.0], [4.0, -3.0]])
    s = cosine_scores(q, g)
    assert s.dtype == torch.float32 and s.shape == (2, 4)
    expected = torch.tensor([[0.6, 0.8, -1.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    assert torch.allclose(s, expected, atol=1e-7)
    assert torch.isfinite(s).all()  # zero vectors do not produce NaN


def test_orthogonal_vectors_score_exactly_zero_whatever_the_chunk():
    # float64 matrix products can leave a +-1e-17 residue for an orthogonal pair, and whether
    # they do depends on the kernel, hence on the chunk's shape (with OpenBLAS/MKL on x86,
    # q[0].g[2] below is 0 in a 2-row product and 5.6e-17 in a 1-row one). The residue must
    # not survive, or ties with exact zeros are broken differently for each chunk size.
    q = torch.tensor([[1.0, -1.0, -1.0, 2.0], [-1.0, -1.0, 2.0, 2.0]])
    g = torch.tensor([[0.0, -1.0, -1.0, 1.0], [0.0, 2.0, 0.0, 1.0], [2.0, -1.0, 1.0, -1.0], [-2.0, 0.0, -1.0, -2.0]])
    full = cosine_scores(q, g)
    assert full[0, 1] == 0 and full[0, 2] == 0
    assert torch.equal(torch.cat([cosine_scores(q[:1], g), cosine_scores(q[1:], g)]), full)
    for chunk in (1, 2):
        ranks = rank_queries(q, g, [1, 2, 3, 4], [99, 99], [(3,), (2,)], chunk=chunk)
        # query 0: after the positive score and the tied zero at position 1; query 1: 0.18 > 0
        assert ranks.tolist() == [2, 1]


def test_tiny_cosines_are_zero_and_larger_ones_kept():
    q = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    g = torch.tensor([[1e-12, 1.0], [1e-6, 1.0]], dtype=torch.float64)
    s = cosine_scores(q, g)
    assert s[0, 0] == 0.0
    assert s[0, 1] == pytest.approx(1e-6, rel=1e-6)


@SETTINGS
@given(retrieval_problems())
def test_cosine_scores_equal_rounded_math_cosines(problem):
    q, g, *_ = problem
    s = cosine_scores(q, g)
    expected = [[f32(math_cosine(a, b)) for b in g.tolist()] for a in q.tolist()]
    assert s.tolist() == expected


@SETTINGS
@given(retrieval_problems(tie_free=True), st.data())
def test_cosine_scores_invariant_to_positive_row_scaling(problem, data):
    q, g, *_ = problem
    fq = torch.tensor(data.draw(st.lists(st.floats(1e-2, 1e2), min_size=len(q), max_size=len(q))))
    fg = torch.tensor(data.draw(st.lists(st.floats(1e-2, 1e2), min_size=len(g), max_size=len(g))))
    s0 = cosine_scores(q, g)
    s1 = cosine_scores(q * fq[:, None], g * fg[:, None])
    assert torch.allclose(s0, s1, atol=1e-6)
    assert (s0.abs() <= 1 + 1e-6).all()


# --------------------------------------------------------------------------- recall_at_k


def test_no_hit_is_int64_max_and_never_a_hit():
    assert NO_HIT == torch.iinfo(torch.int64).max
    ranks = torch.tensor([0, NO_HIT, 3, NO_HIT])
    assert recall_at_k(ranks, [1, 4, 2**62]) == {1: 0.25, 4: 0.5, 2**62: 0.5}


def test_recall_at_k_hand_case():
    ranks = torch.tensor([0, 1, 2, 9, NO_HIT])
    assert recall_at_k(ranks, [1, 2, 3, 10, 11]) == {1: 0.2, 2: 0.4, 3: 0.6, 10: 0.8, 11: 0.8}
    assert recall_at_k([0, 5], (1,)) == {1: 0.5}  # plain lists are accepted
    assert format_recalls({1: 0.5, 10: 1.0}) == {"R@1": 0.5, "R@10": 1.0}


def test_recall_at_k_of_no_queries_raises():
    with pytest.raises(ValueError, match="zero queries"):
        recall_at_k(torch.empty(0, dtype=torch.long), [1])


@SETTINGS
@given(
    st.lists(st.one_of(st.integers(0, 30), st.just(NO_HIT)), min_size=1, max_size=40),
    st.lists(st.integers(0, 40), min_size=1, max_size=8),
)
def test_recall_in_unit_interval_and_monotone_in_k(ranks, ks):
    r = recall_at_k(torch.tensor(ranks), ks)
    assert set(r) == set(ks)
    ks_sorted = sorted(set(ks))
    values = [r[k] for k in ks_sorted]
    assert all(0.0 <= v <= 1.0 for v in values)
    assert all(a <= b for a, b in zip(values, values[1:]))
    for k in ks_sorted:  # definition: fraction of ranks < K
        assert r[k] == pytest.approx(sum(x < k for x in ranks) / len(ranks))


@SETTINGS
@given(retrieval_problems())
def test_recall_is_one_at_gallery_size_when_every_query_has_a_target(problem):
    q, g, gids, refs, tgts = problem
    # give every query one correct target in the gallery that is not its reference
    fixed = []
    for ref, tgt in zip(refs, tgts):
        others = [i for i in gids if i != ref]
        assume(others)
        fixed.append(tuple(tgt) + (others[0],))
    ranks = rank((q, g, gids, refs, fixed))
    assert (ranks < len(gids)).all()
    n = len(gids)
    r = recall_at_k(ranks, range(0, n + 2))
    assert r[0] == 0.0
    assert r[n] == 1.0 and r[n + 1] == 1.0
    values = [r[k] for k in range(0, n + 2)]
    assert all(a <= b for a, b in zip(values, values[1:]))


# --------------------------------------------------------------------------- rank_queries


@SETTINGS
@given(retrieval_problems())
def test_rank_queries_matches_brute_force_with_ties(problem):
    ranks = rank(problem)
    assert ranks.dtype == torch.int64 and ranks.shape == (len(problem[3]),)
    assert ranks.tolist() == brute_force_ranks(*problem)


@SETTINGS
@given(retrieval_problems(tie_free=True))
def test_rank_queries_matches_brute_force_random_floats(problem):
    assert rank(problem).tolist() == brute_force_ranks(*problem)


@SETTINGS
@given(retrieval_problems(max_q=20), st.integers(1, 25))
def test_chunked_equals_unchunked(problem, chunk):
    full = rank(problem, chunk=10_000)
    assert torch.equal(rank(problem, chunk=chunk), full)
    assert torch.equal(rank(problem, chunk=1), full)
    assert torch.equal(rank(problem, chunk=len(problem[0])), full)


@LIGHT
@given(retrieval_problems(tie_free=True, max_q=20), st.integers(1, 25))
def test_chunked_equals_unchunked_random_floats(problem, chunk):
    assert torch.equal(rank(problem, chunk=chunk), rank(problem, chunk=10_000))


@pytest.mark.parametrize("chunk", [1, 2, 3, 1000])
def test_gallery_of_one(chunk):
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    g = torch.tensor([[2.0, 1.0]])
    ranks = rank_queries(q, g, [7], reference_ids=[99, 7, 99], targets=[(7,), (7,), (8,)], chunk=chunk)
    # query 0: the only entry is its target; query 1: the only entry is its reference;
    # query 2: its target is not in the gallery
    assert ranks.tolist() == [0, NO_HIT, NO_HIT]


@SETTINGS
@given(retrieval_problems(tie_free=True), st.data())
def test_invariant_to_gallery_permutation_without_ties(problem, data):
    q, g, gids, refs, tgts = problem
    perm = data.draw(st.permutations(range(len(gids))))
    perm_t = torch.tensor(perm, dtype=torch.long)
    permuted = (q, g[perm_t], [gids[i] for i in perm], refs, tgts)
    assert torch.equal(rank(permuted), rank(problem))


@SETTINGS
@given(retrieval_problems(), st.data())
def test_query_permutation_permutes_ranks(problem, data):
    q, g, gids, refs, tgts = problem
    perm = data.draw(st.permutations(range(len(refs))))
    perm_t = torch.tensor(perm, dtype=torch.long)
    permuted = (q[perm_t], g, gids, [refs[i] for i in perm], [tgts[i] for i in perm])
    assert torch.equal(rank(permuted), rank(problem)[perm_t])  # holds with ties as well


@SETTINGS
@given(retrieval_problems(tie_free=True), st.data())
def test_invariant_to_positive_rescaling_without_ties(problem, data):
    q, g, gids, refs, tgts = problem
    fq = torch.tensor(data.draw(st.lists(st.floats(1e-3, 1e3), min_size=len(q), max_size=len(q))))
    fg = torch.tensor(data.draw(st.lists(st.floats(1e-3, 1e3), min_size=len(g), max_size=len(g))))
    scaled = (q * fq[:, None], g * fg[:, None], gids, refs, tgts)
    assert torch.equal(rank(scaled), rank(problem))


@SETTINGS
@given(retrieval_problems(), st.integers(0, 6))
def test_invariant_to_power_of_two_rescaling_with_ties(problem, e):
    # power-of-two scaling is exact in floating point, so even ties must be preserved
    q, g, gids, refs, tgts = problem
    scaled = (q * 2.0**e, g * 2.0 ** (-e), gids, refs, tgts)
    assert torch.equal(rank(scaled), rank(problem))


@SETTINGS
@given(retrieval_problems())
def test_excluding_reference_equals_removing_it_from_the_gallery(problem):
    """The reference is skipped in its own ranking: every entry after it moves up by one."""
    q, g, gids, refs, tgts = problem
    ranks = rank(problem)
    for i in range(len(refs)):
        keep = [p for p, gid in enumerate(gids) if gid != refs[i]]
        if not keep:
            assert ranks[i] == NO_HIT
            continue
        sub_g = g[torch.tensor(keep, dtype=torch.long)]
        sub_ids = [gids[p] for p in keep]
        correct = tuple(t for t in tgts[i] if t != refs[i])
        alone = rank_queries(q[i : i + 1], sub_g, sub_ids, [OUTSIDE_IDS[0] - 1], [correct])
        assert ranks[i] == alone[0]


@SETTINGS
@given(retrieval_problems())
def test_targets_outside_gallery_are_ignored(problem):
    q, g, gids, refs, tgts = problem
    in_gallery = [tuple(t for t in ts if t in set(gids)) for ts in tgts]
    padded = [ts + tuple(OUTSIDE_IDS) for ts in in_gallery]
    base = rank((q, g, gids, refs, in_gallery))
    assert torch.equal(rank(problem), base)
    assert torch.equal(rank((q, g, gids, refs, padded)), base)
    only_outside = rank((q, g, gids, refs, [tuple(OUTSIDE_IDS)] * len(refs)))
    assert (only_outside == NO_HIT).all()


def test_reference_is_never_a_hit():
    q = torch.tensor([[1.0, 0.0]])
    g = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.5]])
    # the only correct target is the reference itself
    assert rank_queries(q, g, [10, 11, 12], [10], [(10,)]).tolist() == [NO_HIT]
    # a copy of the reference under another id stays (and counts when it is a target)
    g2 = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    assert rank_queries(q, g2, [10, 11, 12], [10], [(10, 11)]).tolist() == [0]
    assert rank_queries(q, g2, [10, 11, 12], [10], [(12,)]).tolist() == [1]


def test_top_scoring_reference_is_skipped_and_others_move_up():
    q = torch.tensor([[1.0, 0.0]])
    # scores: 1.0 (reference), 0.9.., 0.7.., 0.0
    g = torch.tensor([[1.0, 0.0], [1.0, 0.5], [1.0, 1.0], [0.0, 1.0]])
    ids = [5, 6, 7, 8]
    for target, expected_without_exclusion in [(6, 1), (7, 2), (8, 3)]:
        not_excluded = rank_queries(q, g, ids, [999], [(target,)]).item()
        excluded = rank_queries(q, g, ids, [5], [(target,)]).item()
        assert not_excluded == expected_without_exclusion
        assert excluded == expected_without_exclusion - 1
    # a reference ranked below the target does not move it
    assert rank_queries(q, g, ids, [8], [(6,)]).item() == 1


def test_ties_broken_by_gallery_position():
    q = torch.tensor([[1.0, 0.0]])
    # five identical entries (score 1/sqrt 2), a lower one (score 0), a higher one (score 1)
    g = torch.tensor([[1.0, 1.0]] * 5 + [[0.0, 1.0], [1.0, 0.0]])
    ids = [20, 21, 22, 23, 24, 25, 26]
    for pos in range(5):  # the higher entry (last in the gallery) precedes every tied one
        assert rank_queries(q, g, ids, [999], [(ids[pos],)]).item() == pos + 1
    # best target = the earliest of the tied targets
    assert rank_queries(q, g, ids, [999], [(23, 21, 24)]).item() == 2
    # the reference among the tied group is removed: later ties move up by one
    assert rank_queries(q, g, ids, [999], [(23,)]).item() == 4
    assert rank_queries(q, g, ids, [21], [(23,)]).item() == 3
    assert rank_queries(q, g, ids, [24], [(23,)]).item() == 4
    # the entry after all ties
    assert rank_queries(q, g, ids, [999], [(25,)]).item() == 6
    assert rank_queries(q, g, ids, [22], [(25,)]).item() == 5
    assert rank_queries(q, g, ids, [999], [(26,)]).item() == 0
    assert rank_queries(q, g, ids, [26], [(20,)]).item() == 0
    # a positive multiple of a tied vector, appended last, ties exactly and ranks after them
    g2 = torch.cat([g, torch.tensor([[3.0, 3.0]])])
    s = cosine_scores(q, g2)[0]
    assert s[0] == s[7]
    assert rank_queries(q, g2, ids + [27], [999], [(27,)]).item() == 6
    assert rank_queries(q, g2, ids + [27], [20], [(27,)]).item() == 5


def test_ties_after_permutation_follow_new_positions():
    q = torch.tensor([[1.0, 1.0]])
    g = torch.tensor([[2.0, 2.0], [3.0, 3.0], [1.0, 1.0]])
    assert rank_queries(q, g, [1, 2, 3], [0], [(3,)]).item() == 2
    assert rank_queries(q, g[[2, 0, 1]], [3, 1, 2], [0], [(3,)]).item() == 0


# --------------------------------------------------------------------------- ranks_from_scores


@st.composite
def score_problems(draw):
    q = draw(st.integers(1, 6))
    n = draw(st.integers(1, 10))
    scores = draw(st.lists(st.lists(st.integers(-2, 2), min_size=n, max_size=n), min_size=q, max_size=q))
    tmask = draw(st.lists(st.lists(st.booleans(), min_size=n, max_size=n), min_size=q, max_size=q))
    emask = draw(st.lists(st.lists(st.booleans(), min_size=n, max_size=n), min_size=q, max_size=q))
    return (
        torch.tensor(scores, dtype=torch.float32) / 4,
        torch.tensor(tmask, dtype=torch.bool),
        torch.tensor(emask, dtype=torch.bool),
    )


@SETTINGS
@given(score_problems())
def test_ranks_from_scores_matches_brute_force(problem):
    scores, tmask, emask = problem
    assert ranks_from_scores(scores, tmask, emask).tolist() == brute_force_ranks_from_scores(*problem)
    no_exclusion = torch.zeros_like(emask)
    assert ranks_from_scores(scores, tmask).tolist() == brute_force_ranks_from_scores(scores, tmask, no_exclusion)


def test_ranks_from_scores_hand_case():
    scores = torch.tensor(
        [
            [0.1, 0.9, 0.5, 0.9],
            [0.3, 0.3, 0.3, 0.3],
            [0.3, 0.3, 0.3, 0.3],
            [0.0, -1.0, float("-inf"), 1.0],
            [0.2, 0.4, 0.6, 0.8],
        ]
    )
    tmask = torch.tensor(
        [
            [False, False, False, True],  # 0.9 tied with an earlier 0.9 -> rank 1
            [False, False, True, True],  # all tied; earliest target at position 2 -> 2
            [False, False, True, False],  # position 2, positions 0 excluded -> 1
            [False, False, True, False],  # -inf target: everything kept ranks above -> 3
            [False, False, False, False],  # no target
        ]
    )
    emask = torch.zeros_like(tmask)
    emask[2, 0] = True
    assert ranks_from_scores(scores, tmask, emask).tolist() == [1, 2, 1, 3, NO_HIT]
    # a target that is excluded is not a target
    emask2 = torch.zeros_like(tmask)
    emask2[0, 3] = True
    assert ranks_from_scores(scores, tmask, emask2)[0] == NO_HIT


# --------------------------------------------------------------------------- recall_by_group


@SETTINGS
@given(
    st.lists(st.tuples(st.one_of(st.integers(0, 20), st.just(NO_HIT)), st.sampled_from("abc")), min_size=1, max_size=30),
    st.lists(st.integers(1, 25), min_size=1, max_size=5),
)
def test_recall_by_group_equals_recall_on_each_subset(rows, ks):
    ranks = torch.tensor([r for r, _ in rows])
    groups = [g for _, g in rows]
    by = recall_by_group(ranks, groups, iter(ks))  # an iterator must be usable for every group
    assert list(by) == sorted(set(groups))
    for g, rec in by.items():
        idx = torch.tensor([i for i, x in enumerate(groups) if x == g])
        assert rec == recall_at_k(ranks[idx], ks)
    # the overall recall is the query-weighted mean of the group recalls
    overall = recall_at_k(ranks, ks)
    for k in ks:
        weighted = sum(by[g][k] * groups.count(g) for g in by) / len(groups)
        assert overall[k] == pytest.approx(weighted)


def test_recall_by_group_hand_case():
    ranks = torch.tensor([0, 4, NO_HIT, 1])
    out = recall_by_group(ranks, ["shirt", "dress", "shirt", "dress"], [1, 5])
    assert out == {"dress": {1: 0.0, 5: 1.0}, "shirt": {1: 0.5, 5: 0.5}}


@pytest.mark.parametrize("n_groups", [0, 2, 4])
def test_recall_by_group_length_mismatch_raises(n_groups):
    with pytest.raises(ValueError, match="3 ranks but .* group labels"):
        recall_by_group(torch.tensor([0, 1, 2]), ["a"] * n_groups, [1])


# --------------------------------------------------------------------------- validation


def _valid():
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    g = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    return q, g, [1, 2, 3], [1, 2], [(2,), (1,)]


def test_validation_accepts_valid_input():
    assert rank_queries(*_valid()).tolist() == [1, 1]


def test_mismatched_reference_ids_raise():
    q, g, ids, refs, tgts = _valid()
    with pytest.raises(ValueError, match="2 query embeddings, 1 reference ids, 2 target sets"):
        rank_queries(q, g, ids, refs[:1], tgts)


def test_mismatched_target_sets_raise():
    q, g, ids, refs, tgts = _valid()
    with pytest.raises(ValueError, match="target sets"):
        rank_queries(q, g, ids, refs, tgts + [(3,)])


def test_mismatched_gallery_ids_raise():
    q, g, ids, refs, tgts = _valid()
    with pytest.raises(ValueError, match="2 gallery ids for 3 embeddings"):
        rank_queries(q, g, ids[:2], refs, tgts)


def test_duplicate_gallery_ids_raise():
    q, g, _, refs, tgts = _valid()
    with pytest.raises(ValueError, match="not unique"):
        rank_queries(q, g, [1, 2, 1], refs, tgts)


@pytest.mark.parametrize("chunk", [0, -1, -1024])
def test_chunk_below_one_raises(chunk):
    with pytest.raises(ValueError, match=f"chunk must be >= 1, got {chunk}"):
        rank_queries(*_valid(), chunk=chunk)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_embeddings_raise(bad):
    q, g, ids, refs, tgts = _valid()
    q = q.clone()
    q[1, 0] = bad
    with pytest.raises(ValueError, match="NaN"):
        rank_queries(q, g, ids, refs, tgts)
    g = g.clone()
    g[0, 1] = bad
    with pytest.raises(ValueError, match="NaN"):
        rank_queries(_valid()[0], g, ids, refs, tgts)


def test_nan_scores_raise():
    scores = torch.tensor([[0.1, float("nan")]])
    with pytest.raises(ValueError, match="NaN"):
        ranks_from_scores(scores, torch.tensor([[True, False]]))


def test_ranks_from_scores_shape_mismatch_raises():
    with pytest.raises(ValueError, match=r"\(2, 3\).*\(2, 2\)"):
        ranks_from_scores(torch.zeros(2, 3), torch.zeros(2, 2, dtype=torch.bool))


# --------------------------------------------------------------------------- torchmetrics


@LIGHT
@given(retrieval_problems(tie_free=True, max_q=6, max_n=12), st.lists(st.integers(1, 13), min_size=1, max_size=3))
def test_recall_matches_torchmetrics_hit_rate(problem, ks):
    from torchmetrics.retrieval import RetrievalHitRate

    q, g, gids, refs, tgts = problem
    ranks = rank(problem)
    ours = recall_at_k(ranks, ks)
    scores = cosine_scores(q, g)
    preds, target, indexes = [], [], []
    for i in range(len(refs)):
        keep = [p for p, gid in enumerate(gids) if gid != refs[i]]
        correct = set(tgts[i]) - {refs[i]}
        if not keep:  # an empty ranking: torchmetrics needs >= 1 document; it is a miss
            keep, mask = [0], [False]
        else:
            mask = [gids[p] in correct for p in keep]
        preds.append(scores[i, keep])
        target.append(torch.tensor(mask))
        indexes.append(torch.full((len(keep),), i, dtype=torch.long))
    preds_t, target_t, idx_t = torch.cat(preds), torch.cat(target), torch.cat(indexes)
    for k in ks:
        metric = RetrievalHitRate(top_k=k, empty_target_action="neg")
        theirs = float(metric(preds_t, target_t, indexes=idx_t))
        assert ours[k] == pytest.approx(theirs, abs=1e-6)


def test_effective_chunk_caps_scores_per_chunk():
    from cirbench.metrics import MAX_CHUNK_SCORES, effective_chunk

    assert effective_chunk(1024, 1_000) == 1024
    assert effective_chunk(1024, 100_000) == MAX_CHUNK_SCORES // 100_000 < 1024
    assert effective_chunk(1024, 10 * MAX_CHUNK_SCORES) == 1  # never below one query
    with pytest.raises(ValueError, match="chunk must be >= 1"):
        effective_chunk(0, 10)


def test_capped_chunks_rank_as_unchunked(monkeypatch):
    import cirbench.metrics as metrics

    g = torch.Generator().manual_seed(3)
    q, gal = torch.randn(37, 8, generator=g), torch.randn(53, 8, generator=g)
    refs = list(range(37))
    targets = [{(i * 7) % 53, (i * 11) % 53} for i in range(37)]
    whole = metrics.rank_queries(q, gal, torch.arange(53), refs, targets, chunk=37)
    monkeypatch.setattr(metrics, "MAX_CHUNK_SCORES", 2 * 53)  # two queries per chunk
    assert metrics.effective_chunk(37, 53) == 2
    assert torch.equal(metrics.rank_queries(q, gal, torch.arange(53), refs, targets, chunk=37), whole)


# --------------------------------------------------------------------------- the fast path's exactness
#
# rank_queries scores with one float32 product and re-scores exactly only the entries within
# score_error_bound of each query's best target. The problems below put many entries inside
# that window: exact duplicates, power-of-two multiples (exactly equal cosines), 1-ulp nudges
# of a target (cosines equal in float32 or one ulp apart, never resolved by the float32
# product alone), queries equal to a gallery row (cosine 1), zero vectors; plus candidate
# lists, references in and out of the gallery and queries without a target. The reference is
# brute_force_ranks_with_candidates: pure Python float64 cosines rounded to float32.


def brute_force_ranks_with_candidates(q_emb, g_emb, gallery_ids, reference_ids, targets, candidates):
    g_rows = g_emb.tolist()
    out = []
    for qi, q in enumerate(q_emb.tolist()):
        ref = int(reference_ids[qi])
        scores = [f32(math_cosine(q, g)) for g in g_rows]
        cand = None if candidates[qi] is None else {int(c) for c in candidates[qi]}
        order = [p for p in range(len(g_rows)) if gallery_ids[p] != ref and (cand is None or gallery_ids[p] in cand)]
        order.sort(key=lambda p: (-scores[p], p))
        correct = {int(t) for t in targets[qi]} - {ref}
        out.append(next((r for r, p in enumerate(order) if gallery_ids[p] in correct), NO_HIT))
    return out


@st.composite
def near_tie_problems(draw, max_q: int = 12, max_n: int = 40):
    """Random float embeddings (d 8..96) with injected exact ties and near-ties."""
    d = draw(st.integers(8, 96))
    n = draw(st.integers(2, max_n))
    n_q = draw(st.integers(1, max_q))
    gen = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    g = torch.randn(n, d, generator=gen)
    for p in range(n):  # rewrite some rows from earlier ones
        kind = draw(st.sampled_from(["keep", "keep", "dup", "pow2", "nudge", "zero"]))
        if p == 0 or kind == "keep":
            continue
        src = g[draw(st.integers(0, p - 1))]
        if kind == "dup":
            g[p] = src
        elif kind == "pow2":
            g[p] = src * 2.0 ** draw(st.integers(-3, 3))
        elif kind == "nudge":  # one entry moved by one ulp
            g[p] = src
            k = draw(st.integers(0, d - 1))
            g[p, k] = torch.nextafter(src[k], torch.tensor(draw(st.sampled_from([1.0, -1.0])) * 10))
        else:
            g[p] = 0.0
    q = torch.randn(n_q, d, generator=gen)
    for i in range(n_q):  # some queries equal (a multiple of) a gallery row
        if draw(st.booleans()):
            q[i] = g[draw(st.integers(0, n - 1))] * draw(st.sampled_from([1.0, 0.5, 3.0]))
    ids = draw(st.lists(st.integers(0, 500), min_size=n, max_size=n, unique=True))
    refs = [draw(st.one_of(st.sampled_from(ids), st.sampled_from(OUTSIDE_IDS))) for _ in range(n_q)]
    targets = [tuple(draw(st.lists(st.sampled_from(ids + OUTSIDE_IDS), max_size=4))) for _ in range(n_q)]
    cands = [draw(st.one_of(st.none(), st.none(), st.lists(st.sampled_from(ids + OUTSIDE_IDS), max_size=n).map(tuple)))
             for _ in range(n_q)]
    return q, g, ids, refs, targets, cands


@LIGHT
@given(near_tie_problems())
def test_fast_path_equals_brute_force_with_ties_and_near_ties(problem):
    q, g, ids, refs, tgts, cands = problem
    got = rank_queries(q, g, ids, refs, tgts, candidates=cands).tolist()
    assert got == brute_force_ranks_with_candidates(q, g, ids, refs, tgts, cands)


@LIGHT
@given(near_tie_problems(max_q=16), st.integers(1, 17), st.data())
def test_fast_path_independent_of_chunk_and_query_order(problem, chunk, data):
    q, g, ids, refs, tgts, cands = problem
    whole = rank_queries(q, g, ids, refs, tgts, chunk=10_000, candidates=cands)
    assert torch.equal(rank_queries(q, g, ids, refs, tgts, chunk=chunk, candidates=cands), whole)
    perm = data.draw(st.permutations(range(len(refs))))
    permuted = rank_queries(q[list(perm)], g, ids, [refs[i] for i in perm], [tgts[i] for i in perm],
                            chunk=chunk, candidates=[cands[i] for i in perm])
    assert torch.equal(permuted, whole[list(perm)])


@LIGHT
@given(st.integers(1, 4096), st.integers(0, 2**31 - 1), st.sampled_from(["normal", "spiky", "tiny", "mixed"]))
def test_score_error_bound_holds(dim, seed, kind):
    """The float32 fast score (as rank_queries computes it) stays within score_error_bound
    of the exact score, for vectors with very uneven entries too."""
    from cirbench.metrics import score_error_bound

    gen = torch.Generator().manual_seed(seed)
    q, g = torch.randn(6, dim, generator=gen), torch.randn(50, dim, generator=gen)
    if kind == "spiky":
        q[:, 0] *= 1e4
        g[:, 0] *= 1e4
    elif kind == "tiny":
        q, g = q * 1e-30, g * 1e-30
    elif kind == "mixed":
        q = q * torch.logspace(-6, 6, dim)
    exact = cosine_scores(q, g).double()
    qu = torch.nn.functional.normalize(q.double(), dim=1).float()
    inv = 1.0 / torch.linalg.vector_norm(g, dim=1, dtype=torch.float64).clamp_min(1e-12)
    fast = (qu @ (g * inv[:, None].float()).t()).double()
    assert float((fast - exact).abs().max()) <= score_error_bound(dim)


def test_score_error_bound_hand_values():
    from cirbench.metrics import score_error_bound

    # 518 * 2**-24 = 3.087521e-5; times (1 + 1024 * 2**-24) = 1.0000610: + 1.884e-9;
    # + 2 * 1e-10: 3.087729e-5
    assert score_error_bound(512) == pytest.approx(3.087729e-5, rel=1e-6)
    with pytest.raises(ValueError, match="embedding dimension"):
        score_error_bound(0)


# --------------------------------------------------------------------------- top_k_ids


@LIGHT
@given(near_tie_problems(max_n=30), st.integers(1, 35), st.integers(1, 9))
def test_top_k_ids_match_brute_force(problem, k, chunk):
    from cirbench.metrics import top_k_ids

    q, g, ids, refs, _, cands = problem
    got = top_k_ids(q, g, ids, refs, k, chunk=chunk, candidates=cands)
    g_rows = g.tolist()
    for qi, qv in enumerate(q.tolist()):
        scores = [f32(math_cosine(qv, row)) for row in g_rows]
        cand = None if cands[qi] is None else set(cands[qi])
        order = [p for p in range(len(ids)) if ids[p] != refs[qi] and (cand is None or ids[p] in cand)]
        order.sort(key=lambda p: (-scores[p], p))
        assert got[qi] == [ids[p] for p in order[:k]]


def test_top_k_ids_hand_case():
    from cirbench.metrics import top_k_ids

    # query (1, 0); gallery cosines: id 7 -> 0, id 8 -> 1, id 9 -> 1 (tie: 8 is earlier), id 6 -> -1
    g = torch.tensor([[0.0, 1.0], [2.0, 0.0], [1.0, 0.0], [-1.0, 0.0]])
    q = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    got = top_k_ids(q, g, [7, 8, 9, 6], [8, 100], 3, candidates=[None, (6, 9)])
    assert got == [[9, 7, 6], [9, 6]]
    with pytest.raises(ValueError, match="k must be >= 1"):
        top_k_ids(q, g, [7, 8, 9, 6], [8, 100], 0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@LIGHT
@given(near_tie_problems(max_q=16), st.integers(1, 17))
def test_cuda_ranks_equal_cpu_ranks(problem, chunk):
    q, g, ids, refs, tgts, cands = problem
    cpu = rank_queries(q, g, ids, refs, tgts, chunk=chunk, candidates=cands)
    assert torch.equal(rank_queries(q.cuda(), g.cuda(), ids, refs, tgts, chunk=chunk, candidates=cands), cpu)


def test_zero_dimensional_embeddings_rank_by_position():
    # every cosine is 0: all tie, so a target's rank is the number of kept entries before it
    q, g = torch.zeros(2, 0), torch.zeros(4, 0)
    assert rank_queries(q, g, [1, 2, 3, 4], [1, 9], [(3,), (4,)]).tolist() == [1, 3]


@LIGHT
@given(near_tie_problems(max_q=16), st.integers(1, 17))
def test_dense_and_sparse_window_paths_agree_with_brute_force(problem, chunk):
    """rank_queries splits the entries near each best target one of two ways (their positions
    when few, a second compare when many); force each and compare with the brute force."""
    from unittest import mock

    import cirbench.metrics as metrics

    q, g, ids, refs, tgts, cands = problem
    want = brute_force_ranks_with_candidates(q, g, ids, refs, tgts, cands)
    for threshold in (0, 10**9):  # 0: always the dense path; huge: always the sparse one
        with mock.patch.object(metrics, "SPARSE_ENTRIES_PER_QUERY", threshold):
            assert rank_queries(q, g, ids, refs, tgts, chunk=chunk, candidates=cands).tolist() == want


# --------------------------------------------------------------------------- the tiled one-pass path
#
# rank_and_top_k scores the gallery in tiles of TILE_ROWS x TILE_COLUMNS, keeps each row's
# k + TOP_K_MARGIN best fast scores from tile to tile and searches a row again when near-ties
# overflow them. Real tiles are 256 x 2048, far above the generated problems, so these tests
# shrink them (and the margin) to put many tiles, merges and overflows in every problem.


def brute_force_top_k(q_emb, g_emb, gallery_ids, reference_ids, candidates, k):
    """The documented top-k, one query at a time, in plain Python."""
    g_rows = g_emb.tolist()
    out = []
    for qi, qv in enumerate(q_emb.tolist()):
        scores = [f32(math_cosine(qv, row)) for row in g_rows]
        cand = None if candidates[qi] is None else set(candidates[qi])
        order = [p for p in range(len(gallery_ids))
                 if gallery_ids[p] != reference_ids[qi] and (cand is None or gallery_ids[p] in cand)]
        order.sort(key=lambda p: (-scores[p], p))
        out.append([gallery_ids[p] for p in order[:k]])
    return out


def small_tiles(rows, cols, margin, sparse=16):
    """Within the block: cirbench.metrics' tile shape, top-k margin and sparse threshold."""
    from unittest import mock

    import cirbench.metrics as metrics

    return mock.patch.multiple(metrics, TILE_ROWS=rows, TILE_COLUMNS=cols, TOP_K_MARGIN=margin,
                               SPARSE_ENTRIES_PER_QUERY=sparse)


@LIGHT
@given(near_tie_problems(max_q=10, max_n=40), st.integers(1, 12), st.sampled_from([1, 2, 3, 7]),
       st.sampled_from([8, 16, 24]), st.sampled_from([0, 1, 3]), st.sampled_from([0, 10**9]))
def test_tiled_ranks_and_top_k_equal_brute_force(problem, k, rows, cols, margin, sparse):
    from cirbench.metrics import rank_and_top_k

    q, g, ids, refs, tgts, cands = problem
    with small_tiles(rows, cols, margin, sparse):
        ranks, tops = rank_and_top_k(q, g, ids, refs, tgts, k, candidates=cands)
    assert ranks.tolist() == brute_force_ranks_with_candidates(q, g, ids, refs, tgts, cands)
    assert tops == brute_force_top_k(q, g, ids, refs, cands, k)


@LIGHT
@given(near_tie_problems(max_q=16, max_n=40), st.integers(1, 17), st.integers(1, 9), st.data())
def test_tiled_path_independent_of_chunk_tiles_and_query_order(problem, chunk, k, data):
    from cirbench.metrics import rank_and_top_k

    q, g, ids, refs, tgts, cands = problem
    with small_tiles(1000, 1024, 14):  # one tile holds the whole problem
        whole = rank_and_top_k(q, g, ids, refs, tgts, k, chunk=10_000, candidates=cands)
    perm = data.draw(st.permutations(range(len(refs))))
    with small_tiles(data.draw(st.integers(1, 5)), 8 * data.draw(st.integers(1, 4)), data.draw(st.integers(0, 2))):
        ranks, tops = rank_and_top_k(q[list(perm)], g, ids, [refs[i] for i in perm], [tgts[i] for i in perm], k,
                                     chunk=chunk, candidates=[cands[i] for i in perm])
    assert torch.equal(ranks, whole[0][list(perm)])
    assert tops == [whole[1][i] for i in perm]


def test_duplicates_overflowing_the_kept_scores_search_the_row_again():
    # 20 copies of the query's direction at positions 3, 5, 7, ..., 41 (every tile of 8 holds
    # some), the other rows orthogonal to it: the copies all score 1 and tie, so the top-3 are
    # the three earliest copies, positions 3, 5, 7 (ids 103, 105, 107) after the reference
    # (id 101, position 1, a copy too: left out). Kept scores hold k + 0 = 3 entries and
    # overflow with copies, so the row is searched again; a wrong merge would return later
    # copies (any 3 of the 20).
    from cirbench.metrics import rank_and_top_k

    d = 4
    g = torch.zeros(44, d)
    g[:, 1] = 1.0  # orthogonal to the query (score 0)
    for p in [1] + list(range(3, 42, 2)):
        g[p] = torch.tensor([2.0, 0.0, 0.0, 0.0])
    q = torch.tensor([[1.0, 0.0, 0.0, 0.0]] * 3)
    ids = list(range(100, 144))
    with small_tiles(2, 8, 0):
        ranks, tops = rank_and_top_k(q, g, ids, [101, 101, 999], [(141,), (143,), (101,)], 3)
    assert tops == [[103, 105, 107], [103, 105, 107], [101, 103, 105]]
    # target 141 (position 41) is the last copy: ahead of it the 19 other copies less the
    # reference = 19; target 143 (position 43, score 0) comes after the 20 copies and the
    # rows of score 0 before it, the even positions 0, 2, ..., 42 (22): 20 + 22 = 42; the third
    # query's reference 999 is not in the gallery, its target 101 is the first copy: rank 0
    assert ranks.tolist() == [19, 42, 0]


@pytest.mark.parametrize("threads", [1, 2])
def test_worker_threads_give_the_same_result_and_restore_the_thread_count(threads):
    from cirbench.metrics import rank_and_top_k

    gen = torch.Generator().manual_seed(5)
    q, g = torch.randn(20, 16, generator=gen), torch.randn(70, 16, generator=gen)
    g[40:50] = g[0:10]  # duplicates: exact ties
    ids, refs = list(range(70)), [i * 3 % 70 for i in range(20)]
    tgts = [(i, 40 + i % 10) for i in range(20)]
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with small_tiles(3, 16, 1):
            ranks, tops = rank_and_top_k(q, g, ids, refs, tgts, 5)
        assert torch.get_num_threads() == threads
    finally:
        torch.set_num_threads(before)
    assert ranks.tolist() == brute_force_ranks_with_candidates(q, g, ids, refs, tgts, [None] * 20)
    assert tops == brute_force_top_k(q, g, ids, refs, [None] * 20, 5)


def test_rank_and_top_k_equals_the_two_functions_and_checks_k():
    from cirbench.metrics import rank_and_top_k, top_k_ids

    gen = torch.Generator().manual_seed(2)
    q, g = torch.randn(9, 8, generator=gen), torch.randn(30, 8, generator=gen)
    ids, refs, tgts = list(range(30)), list(range(9)), [(i + 1, i + 2) for i in range(9)]
    cands = [None, (1, 2, 3), None, (), None, None, (4, 5), None, None]
    ranks, tops = rank_and_top_k(q, g, ids, refs, tgts, 4, chunk=4, candidates=cands)
    assert torch.equal(ranks, rank_queries(q, g, ids, refs, tgts, candidates=cands))
    assert tops == top_k_ids(q, g, ids, refs, 4, candidates=cands)
    # an empty candidate list gives no ids; query 1 (reference 1) keeps 2 and 3 of its (1, 2, 3)
    assert tops[3] == [] and sorted(tops[1]) == [2, 3]
    assert rank_and_top_k(q, g, ids, refs, tgts, 0)[1] == [[]] * 9
    with pytest.raises(ValueError, match="k must be >= 0"):
        rank_and_top_k(q, g, ids, refs, tgts, -1)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@LIGHT
@given(near_tie_problems(max_q=16), st.integers(1, 17), st.integers(1, 12))
def test_cuda_ranks_and_top_k_equal_cpu(problem, chunk, k):
    """On CUDA a tile is a whole chunk (one product per chunk, no worker threads): the
    same ranks and top-k as the CPU's tiles."""
    from cirbench.metrics import rank_and_top_k

    q, g, ids, refs, tgts, cands = problem
    with small_tiles(3, 8, 1):
        cpu = rank_and_top_k(q, g, ids, refs, tgts, k, chunk=chunk, candidates=cands)
    gpu = rank_and_top_k(q.cuda(), g.cuda(), ids, refs, tgts, k, chunk=chunk, candidates=cands)
    assert torch.equal(gpu[0], cpu[0]) and gpu[1] == cpu[1]
