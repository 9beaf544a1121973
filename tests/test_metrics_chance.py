"""The chance level of Recall@K stated in every table (issue 16)."""

from __future__ import annotations

import itertools
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cirbench.metrics import chance_recall, ranking_pools


def test_chance_by_hand():
    # one correct among 10: K / 10
    assert chance_recall([1], [10], [1, 5, 10]) == pytest.approx({1: 0.1, 5: 0.5, 10: 1.0})
    # two correct among 4, K = 1: 1/2; K = 2: 1 - C(2,2)/C(4,2) = 1 - 1/6 = 5/6; K = 3: n - m < K -> 1
    assert chance_recall([2], [4], [1, 2, 3]) == pytest.approx({1: 0.5, 2: 5 / 6, 3: 1.0})
    # a query with no correct entry never hits; the mean is over every query
    assert chance_recall([1, 0], [10, 10], [1]) == pytest.approx({1: 0.05})


def _enumerated(m: int, n: int, k: int) -> Fraction:
    """Exact P(a random top k of n entries holds one of the m correct ones), by enumeration."""
    hits = total = 0
    for top in itertools.combinations(range(n), min(k, n)):
        total += 1
        hits += any(i < m for i in top)
    return Fraction(hits, total)


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_chance_equals_enumeration(data):
    n = data.draw(st.integers(1, 9))
    m = data.draw(st.integers(0, n))
    k = data.draw(st.integers(1, 11))
    got = chance_recall([m], [n], [k])[k]
    assert got == pytest.approx(float(_enumerated(m, n, k)), abs=1e-12)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 50), st.integers(0, 50)), min_size=1, max_size=20), st.integers(1, 60))
def test_chance_is_a_probability_increasing_in_k(pairs, k):
    m = [min(a, b) for a, b in pairs]
    n = [max(a, b) for a, b in pairs]
    lo, hi = chance_recall(m, n, [k])[k], chance_recall(m, n, [k + 1])[k + 1]
    assert 0.0 <= lo <= hi <= 1.0 + 1e-12


def test_chance_refuses_bad_counts():
    with pytest.raises(ValueError, match="num_correct"):
        chance_recall([3], [2], [1])
    with pytest.raises(ValueError, match="zero queries"):
        chance_recall([], [], [1])


def test_pools_follow_the_ranking_rules():
    gallery = [10, 11, 12, 13, 14]
    # q0: reference 10 is in the gallery and excluded; targets 11, 12 and 99 (not in the gallery)
    # q1: reference 50 not in the gallery; target 10
    # q2: candidates {11, 12, 77} within the gallery -> {11, 12}, reference 12 excluded -> {11}; target 11
    # q3: target = its own reference: it cannot count
    m, n = ranking_pools(gallery, [10, 50, 12, 13], [[11, 12, 99], [10], [11], [13]],
                         [None, None, [11, 12, 77], None])
    assert m == [2, 1, 1, 0]
    assert n == [4, 5, 1, 4]
