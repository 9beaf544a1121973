"""Issue 13: bootstrap intervals of Recall@K, paired differences and rank groups."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cirbench.uncertainty import difference_ci, per_query, rank_groups, recall_ci, separated

hit_vectors = st.lists(st.booleans(), min_size=2, max_size=60).map(lambda v: np.array(v, dtype=float))


@settings(max_examples=25, deadline=None)
@given(hit_vectors)
def test_identical_rows_are_never_separated(v):
    low, high = difference_ci(v, v.copy())
    assert low <= 0 <= high
    assert not separated(v, v.copy())
    labels = rank_groups({"a": v, "b": v.copy()})
    assert labels["a"] == labels["b"] == "1="


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 60))
def test_a_row_that_hits_every_query_another_misses_is_separated(q):
    a, b = np.ones(q), np.zeros(q)
    assert difference_ci(a, b)[0] > 0
    assert rank_groups({"b": b, "a": a}) == {"a": "1", "b": "2"}


@settings(max_examples=20, deadline=None)
@given(st.lists(st.booleans(), min_size=4, max_size=40).filter(lambda v: 0 < sum(v) < len(v)))
def test_intervals_shrink_as_queries_grow(v):
    # the same hit pattern on 4x the queries: the interval's width ~ 1/sqrt(Q) halves
    small, large = np.array(v, dtype=float), np.tile(np.array(v, dtype=float), 4)
    ws = np.subtract(*recall_ci(small)[::-1])
    wl = np.subtract(*recall_ci(large)[::-1])
    assert wl < ws
    mean = small.mean()
    assert recall_ci(large)[0] <= mean <= recall_ci(large)[1]


def test_interval_width_matches_the_normal_approximation():
    # 400 queries, half hits: the normal interval is +- 1.96 sqrt(0.25 / 400) = +- 0.049
    v = np.tile([1.0, 0.0], 200)
    low, high = recall_ci(v)
    assert low < 0.5 < high
    assert high - low == pytest.approx(2 * 0.049, rel=0.15)


def test_seeds_are_averaged_per_query():
    # two seeds, three queries; K = 1: hits (1,0,0) and (1,1,0) -> per query (1, 0.5, 0)
    values = per_query([np.array([0, 3, 2]), np.array([0, 0, 9])], k=1)
    assert values.tolist() == [1.0, 0.5, 0.0]
    with pytest.raises(ValueError, match="not the same queries"):
        per_query([np.array([0]), np.array([0, 1])], k=1)


def test_rank_group_labels():
    # 40 queries: a hits all, b and c the same half, d none -> 1, 2=, 2=, 4
    half = np.tile([1.0, 0.0], 20)
    labels = rank_groups({"d": np.zeros(40), "b": half, "a": np.ones(40), "c": half.copy()})
    assert labels == {"a": "1", "b": "2=", "c": "2=", "d": "4"}
