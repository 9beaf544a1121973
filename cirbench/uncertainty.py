"""Uncertainty of Recall@K over queries: bootstrap intervals, paired differences, rank groups.

The statistic is a mean over queries of per-query hit values. With one seed a query's value is
its hit indicator at K (1 when its best correct target ranks in the top K); with several
seeds of the same composer it is the mean of the seeds' indicators for that query (the seeds
rank the same queries), so resampling queries keeps the seeds of a query together.

* :func:`recall_ci`: the 95 % interval of a row's Recall@K by a seeded percentile bootstrap
  over queries (``scipy.stats.bootstrap``, :data:`RESAMPLES` resamples).
* :func:`difference_ci`: the interval of the difference of two rows' Recall@K on the same
  queries, by a paired bootstrap (the same resampled queries for both rows).
* :func:`rank_groups`: rows sorted by Recall@K (best first); the first row leads group 1; each
  next row joins the current group unless the paired difference interval between the group's
  leader and it lies entirely above 0, in which case it starts a new group and leads it. A
  group is labelled by the position (1-based) of its leader, with ``=`` when it has several
  rows: ``1``, ``2=``, ``2=``, ``4``.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
from scipy import stats

#: Bootstrap resamples of every interval.
RESAMPLES = 2000
#: Confidence level of every interval.
CONFIDENCE = 0.95
#: The seed of the bootstrap's generator: tables are reproducible.
SEED = 0
METHOD = "percentile"


def describe_method() -> str:
    """One sentence for a table's header."""
    return (f"{int(CONFIDENCE * 100)} % CI: seeded {METHOD} bootstrap over queries "
            f"({RESAMPLES} resamples, scipy.stats.bootstrap; several seeds: each query's hits "
            "averaged over the seeds, then queries resampled); differences: paired bootstrap on "
            "the same queries")


def hits(ranks: np.ndarray, k: int) -> np.ndarray:
    """``[Q]`` float: 1.0 where ``rank < k`` (a hit at K), else 0.0."""
    return (np.asarray(ranks) < k).astype(np.float64)


def per_query(rank_sets: Sequence[np.ndarray], k: int) -> np.ndarray:
    """``[Q]``: each query's hit at K averaged over the seeds' rank vectors (each ``[Q]``, in
    the same query order). Raises ``ValueError`` for no seed or vectors of different lengths."""
    if not rank_sets:
        raise ValueError("no rank vector")
    lengths = {len(r) for r in rank_sets}
    if len(lengths) != 1:
        raise ValueError(f"rank vectors of different lengths {sorted(lengths)}: not the same queries")
    return np.mean([hits(r, k) for r in rank_sets], axis=0)


def _interval(data: tuple[np.ndarray, ...], statistic, paired: bool) -> tuple[float, float]:
    if len(data[0]) < 2:
        value = float(statistic(*data, axis=-1))
        return value, value
    if all(np.ptp(d) == 0 for d in data) or (paired and np.ptp(data[0] - data[1]) == 0):
        # every resample gives the same value (scipy warns and returns NaN for this)
        value = float(statistic(*data, axis=-1))
        return value, value
    res = stats.bootstrap(data, statistic, n_resamples=RESAMPLES, confidence_level=CONFIDENCE,
                          method=METHOD, paired=paired, vectorized=True,
                          random_state=np.random.default_rng(SEED))
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def recall_ci(values: np.ndarray) -> tuple[float, float]:
    """The :data:`CONFIDENCE` interval (fractions) of the mean of ``values`` (``[Q]``
    per-query hits, :func:`per_query`) by a seeded percentile bootstrap over queries."""
    return _interval((np.asarray(values, dtype=np.float64),), np.mean, paired=False)


def _mean_difference(a, b, axis=-1):
    return np.mean(a, axis=axis) - np.mean(b, axis=axis)


def difference_ci(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """The interval of ``mean(a) - mean(b)`` by a paired bootstrap: ``a`` and ``b`` are two
    rows' per-query values on the same queries (``[Q]`` each; ``ValueError`` otherwise)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"paired values of shapes {a.shape} and {b.shape}: not the same queries")
    return _interval((a, b), _mean_difference, paired=True)


def separated(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether row ``a`` is better than row ``b``: the paired difference interval lies above 0."""
    return difference_ci(a, b)[0] > 0


def rank_groups(values: Mapping[str, np.ndarray]) -> dict[str, str]:
    """The rank-group label of each row (``{name: [Q] per-query values}``, all on the same
    queries) by the rule of the module docstring; ties in the mean keep the mapping's order."""
    order = sorted(values, key=lambda n: -float(np.mean(values[n])))
    leaders: list[int] = []  # position of each row's group leader
    for i, name in enumerate(order):
        if i == 0:
            leaders.append(0)
            continue
        lead = leaders[i - 1]
        leaders.append(i if separated(values[order[lead]], values[name]) else lead)
    size = {lead: leaders.count(lead) for lead in leaders}
    return {name: f"{lead + 1}{'=' if size[lead] > 1 else ''}" for name, lead in zip(order, leaders)}
