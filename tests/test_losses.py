"""Tests for :mod:`cirbench.losses` (docs/papers.md §2: TIRG soft triplet, batch classification,
learnable-scale normalisation; §0.4: the true autograd gradient)."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from cirbench.losses import (
    BASE_LOSSES,
    NormalizationLayer,
    base_loss,
    batch_classification_loss,
    soft_triplet_loss,
)

SETTINGS = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# --------------------------------------------------------------------------- helpers


def softplus(x: float) -> float:
    return math.log1p(math.exp(x)) if x < 30 else x + math.log1p(math.exp(-x))


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def sqdist(a: list[float], b: list[float]) -> float:
    return sum((x - y) ** 2 for x, y in zip(a, b))


def all_triplets(b: int) -> list[tuple[int, int, int]]:
    """TIRG's triplets over F = [q; t] with labels [0..B-1, 0..B-1]: (i, j, k) with
    label(j) == label(i), j != i, label(k) != label(i)."""
    labels = [i % b for i in range(2 * b)]
    return [
        (i, j, k)
        for i in range(2 * b)
        for j in range(2 * b)
        if j != i and labels[j] == labels[i]
        for k in range(2 * b)
        if labels[k] != labels[i]
    ]


def brute_soft_triplet(q: torch.Tensor, t: torch.Tensor, triplets=None) -> float:
    feats = q.tolist() + t.tolist()
    triplets = all_triplets(len(q)) if triplets is None else triplets
    terms = [softplus(sqdist(feats[i], feats[j]) - sqdist(feats[i], feats[k])) for i, j, k in triplets]
    return sum(terms) / len(terms)


def brute_batch_classification(q: torch.Tensor, t: torch.Tensor) -> float:
    qs, ts = q.tolist(), t.tolist()
    total = 0.0
    for i, qi in enumerate(qs):
        logits = [sum(a * b for a, b in zip(qi, tj)) for tj in ts]
        m = max(logits)
        log_z = m + math.log(sum(math.exp(x - m) for x in logits))
        total += log_z - logits[i]
    return total / len(qs)


def tirg_handwritten_gradient(feats: torch.Tensor, triplets) -> torch.Tensor:
    """The backward pass of TIRG's ``MyTripletLossFunc`` (google/tirg torch_functions.py):
    ``f = 1 - 1/(1 + exp(d_ij - d_ik))`` and ``f * (a - b)`` terms, without the factor 2."""
    x = feats.tolist()
    grad = [[0.0] * len(x[0]) for _ in x]
    n = len(triplets)
    for i, j, k in triplets:
        f = 1.0 - 1.0 / (1.0 + math.exp(sqdist(x[i], x[j]) - sqdist(x[i], x[k])))
        for c in range(len(x[0])):
            grad[i][c] += f * (x[i][c] - x[j][c]) / n
            grad[j][c] += f * (x[j][c] - x[i][c]) / n
            grad[i][c] += -f * (x[i][c] - x[k][c]) / n
            grad[k][c] += -f * (x[k][c] - x[i][c]) / n
    return torch.tensor(grad, dtype=torch.float64)


@st.composite
def batches(draw, min_b: int = 2, max_b: int = 6, max_d: int = 4, bound: float = 3.0, dtype=torch.float64):
    b = draw(st.integers(min_b, max_b))
    d = draw(st.integers(1, max_d))
    seed = draw(st.integers(0, 2**31 - 1))
    scale = draw(st.floats(1e-2, bound))
    gen = torch.Generator().manual_seed(seed)
    q = (torch.rand(b, d, generator=gen, dtype=torch.float64) * 2 - 1) * scale
    t = (torch.rand(b, d, generator=gen, dtype=torch.float64) * 2 - 1) * scale
    return q.to(dtype), t.to(dtype)


# --------------------------------------------------------------------------- soft triplet: values


def test_soft_triplet_hand_case_1d():
    # F = [q0, q1, t0, t1] = [0, 3, 1, 5], labels [0, 1, 0, 1]
    q = torch.tensor([[0.0], [3.0]])
    t = torch.tensor([[1.0], [5.0]])
    terms = [
        softplus(1 - 9), softplus(1 - 25),  # anchor q0: positive t0 (d=1); negatives q1 (9), t1 (25)
        softplus(4 - 9), softplus(4 - 4),  # anchor q1: positive t1 (d=4); negatives q0 (9), t0 (4)
        softplus(1 - 4), softplus(1 - 16),  # anchor t0: positive q0 (d=1); negatives q1 (4), t1 (16)
        softplus(4 - 25), softplus(4 - 16),  # anchor t1: positive q1 (d=4); negatives q0 (25), t0 (16)
    ]
    expected = sum(terms) / 8
    assert soft_triplet_loss(q, t, negatives_per_anchor=None).item() == pytest.approx(expected, rel=1e-6)
    # B = 2 has 2B - 2 = 2 negatives per anchor, so TIRG's default of 3 keeps them all
    assert soft_triplet_loss(q, t).item() == pytest.approx(expected, rel=1e-6)


def test_soft_triplet_hand_case_2d():
    # unit square: q0 (0,0), q1 (1,0), t0 (0,1), t1 (1,1); every positive at d=1,
    # every anchor has one negative at d=1 and one (the diagonal) at d=2
    q = torch.tensor([[0.0, 0.0], [1.0, 0.0]])
    t = torch.tensor([[0.0, 1.0], [1.0, 1.0]])
    expected = (math.log(2.0) + softplus(-1.0)) / 2
    assert soft_triplet_loss(q, t, None).item() == pytest.approx(expected, rel=1e-6)


@SETTINGS
@given(batches())
def test_soft_triplet_equals_brute_force_over_all_triplets(batch):
    q, t = batch
    assert soft_triplet_loss(q, t, None).item() == pytest.approx(brute_soft_triplet(q, t), rel=1e-8, abs=1e-8)


@SETTINGS
@given(batches(dtype=torch.float32, bound=100.0), st.sampled_from([None, 1, 3]))
def test_soft_triplet_finite_and_nonnegative(batch, negatives):
    q, t = batch
    loss = soft_triplet_loss(q, t, negatives, generator=torch.Generator().manual_seed(0))
    assert loss.ndim == 0 and torch.isfinite(loss)
    assert loss.item() >= 0.0


@SETTINGS
@given(batches(dtype=torch.float32, bound=1.0))
def test_soft_triplet_strictly_positive_for_bounded_inputs(batch):
    q, t = batch  # all |x| <= 1 and D <= 4: every d_ij - d_ik >= -16, softplus(-16) > 0 in float32
    assert soft_triplet_loss(q, t, None).item() > 0.0


@SETTINGS
@given(batches(), st.data())
def test_soft_triplet_invariant_to_joint_batch_permutation(batch, data):
    q, t = batch
    perm = torch.tensor(data.draw(st.permutations(range(len(q)))), dtype=torch.long)
    a = soft_triplet_loss(q, t, None)
    b = soft_triplet_loss(q[perm], t[perm], None)
    assert b.item() == pytest.approx(a.item(), rel=1e-12, abs=1e-15)


def test_soft_triplet_not_invariant_to_separate_permutation():
    # sanity: permuting only the targets breaks the pairing and changes the loss
    q = torch.tensor([[0.0], [10.0]], dtype=torch.float64)
    t = torch.tensor([[0.1], [10.1]], dtype=torch.float64)
    assert soft_triplet_loss(q, t[[1, 0]], None) > soft_triplet_loss(q, t, None) + 1.0


@SETTINGS
@given(
    st.integers(2, 5),
    st.integers(1, 3),
    st.data(),
    st.floats(0.0, 2.0),
    st.floats(0.0, 2.0),
)
def test_soft_triplet_decreases_as_a_positive_moves_closer(b, extra_dims, data, c1, c2):
    """Move t_i toward q_i along an axis orthogonal to everything else.

    q_i = (0, u), t_i = (c, u), the other pairs collapsed (q_k = t_k = (0, v_k)). Then
    d(q_i, t_i) = c^2, d(q_i, k) = r_k^2, d(t_i, k) = c^2 + r_k^2, and the loss is a strictly
    increasing function of c^2 (its derivative is a positive sum of sigma(s - r^2) - sigma(-s - r^2)).
    """
    assume(abs(c1 - c2) > 1e-3)
    near, far = min(c1, c2), max(c1, c2)
    i = data.draw(st.integers(0, b - 1))
    coords = st.floats(-1.0, 1.0)
    u = data.draw(st.lists(coords, min_size=extra_dims, max_size=extra_dims))
    others = [data.draw(st.lists(coords, min_size=extra_dims, max_size=extra_dims)) for _ in range(b)]

    def loss_at(c: float) -> float:
        q = torch.tensor([[0.0] + v for v in others], dtype=torch.float64)
        q[i] = torch.tensor([0.0] + u, dtype=torch.float64)
        t = q.clone()
        t[i, 0] = c
        return soft_triplet_loss(q, t, None).item()

    l_near, l_far = loss_at(near), loss_at(far)
    if far**2 - near**2 > 1e-2:
        assert l_near < l_far
    else:
        assert l_near <= l_far


def test_soft_triplet_decreases_as_a_positive_moves_closer_hand_case():
    # the construction above with B = 3, u = 0, v = (2, -1): target 0 moves along x toward query 0
    q = torch.tensor([[0.0, 0.0], [0.0, 2.0], [0.0, -1.0]], dtype=torch.float64)
    losses = []
    for c in [2.0, 1.5, 1.0, 0.5, 0.0]:
        t = q.clone()
        t[0, 0] = c
        losses.append(soft_triplet_loss(q, t, None).item())
    assert all(a > b for a, b in zip(losses, losses[1:])), losses
    # note: in a general batch moving t_i toward q_i need not lower the loss, since t_i is also
    # an anchor and a negative of the other anchors; a gradient step always does (next test)


@SETTINGS
@given(batches(max_b=5))
def test_soft_triplet_gradient_step_decreases_loss(batch):
    q, t = batch
    q = q.clone().requires_grad_(True)
    t = t.clone().requires_grad_(True)
    loss = soft_triplet_loss(q, t, None)
    gq, gt = torch.autograd.grad(loss, (q, t))
    gnorm2 = float((gq**2).sum() + (gt**2).sum())
    assume(gnorm2 > 1e-8)
    lr = 1e-3 / max(1.0, math.sqrt(gnorm2))
    with torch.no_grad():
        stepped = soft_triplet_loss(q - lr * gq, t - lr * gt, None)
    assert stepped.item() < loss.item()


# --------------------------------------------------------------------------- soft triplet: gradients


@SETTINGS
@given(batches(max_b=4, max_d=3))
def test_autograd_gradient_is_twice_tirg_handwritten_gradient(batch):
    """TIRG's hand-written backward drops the factor 2 of d||a-b||^2/da = 2(a-b) (docs/papers.md §2, §6.5);
    cirbench uses the true gradient, exactly twice TIRG's."""
    q, t = batch
    feats = torch.cat([q, t]).requires_grad_(True)
    b = len(q)
    loss = soft_triplet_loss(feats[:b], feats[b:], None)
    (grad,) = torch.autograd.grad(loss, feats)
    hand = tirg_handwritten_gradient(feats.detach(), all_triplets(b))
    # F.softplus is linear above x = 20 (slope 1 instead of sigmoid(x) = 1 - O(2e-9))
    assert torch.allclose(grad, 2 * hand, rtol=1e-7, atol=1e-8)
    assert not torch.allclose(grad, hand, rtol=1e-3, atol=1e-6) or grad.abs().max() < 1e-6


def test_gradient_tiny_case_by_hand():
    # B = 2 in 1-D: F = [x0, x1, x2, x3] = [q0, q1, t0, t1] = [0, 3, 1, 5]; 8 triplets.
    # For a term softplus(d_ij - d_ik), d = (a - b)^2:
    #   d/dx_i = s * (2(x_i - x_j) - 2(x_i - x_k)), d/dx_j = s * 2(x_j - x_i),
    #   d/dx_k = -s * 2(x_k - x_i), with s = sigmoid(d_ij - d_ik).
    x = [0.0, 3.0, 1.0, 5.0]
    triplets = [(0, 2, 1), (0, 2, 3), (1, 3, 0), (1, 3, 2), (2, 0, 1), (2, 0, 3), (3, 1, 0), (3, 1, 2)]
    assert sorted(triplets) == sorted(all_triplets(2))
    grad = [0.0] * 4
    for i, j, k in triplets:
        s = sigmoid((x[i] - x[j]) ** 2 - (x[i] - x[k]) ** 2)
        grad[i] += s * (2 * (x[i] - x[j]) - 2 * (x[i] - x[k])) / 8
        grad[j] += s * 2 * (x[j] - x[i]) / 8
        grad[k] += -s * 2 * (x[k] - x[i]) / 8
    feats = torch.tensor([[v] for v in x], dtype=torch.float64, requires_grad=True)
    soft_triplet_loss(feats[:2], feats[2:], None).backward()
    assert feats.grad[:, 0].tolist() == pytest.approx(grad, rel=1e-12)
    # ... and TIRG's hand-written backward is exactly half of it
    hand = tirg_handwritten_gradient(feats.detach(), triplets)[:, 0].tolist()
    assert [2 * h for h in hand] == pytest.approx(grad, rel=1e-12)


@pytest.mark.parametrize("negatives", [None, 1, 3])
@pytest.mark.parametrize(
    "make",
    [
        lambda: (torch.zeros(4, 3), torch.zeros(4, 3)),
        lambda: (torch.ones(4, 3) * 0.7, torch.ones(4, 3) * 0.7),  # all rows identical
        lambda: (torch.tensor([[1.0, 2.0]] * 3), torch.tensor([[1.0, 2.0]] * 3)),
    ],
)
def test_soft_triplet_degenerate_batches_have_finite_zero_gradients(make, negatives):
    q, t = (x.clone().requires_grad_(True) for x in make())
    loss = soft_triplet_loss(q, t, negatives, generator=torch.Generator().manual_seed(1))
    assert loss.item() == pytest.approx(math.log(2.0))  # every d is 0: softplus(0)
    loss.backward()
    for g in (q.grad, t.grad):
        assert g is not None and torch.isfinite(g).all()
        assert (g == 0).all()  # every difference is 0


@SETTINGS
@given(batches(dtype=torch.float32, bound=50.0), st.sampled_from([None, 2]))
def test_soft_triplet_gradients_finite(batch, negatives):
    q, t = (x.clone().requires_grad_(True) for x in batch)
    soft_triplet_loss(q, t, negatives, generator=torch.Generator().manual_seed(0)).backward()
    assert torch.isfinite(q.grad).all() and torch.isfinite(t.grad).all()


def test_soft_triplet_gradients_finite_through_normalization_of_zeros():
    norm = NormalizationLayer()
    q = torch.zeros(3, 4, requires_grad=True)
    t = torch.zeros(3, 4, requires_grad=True)
    loss = soft_triplet_loss(norm(q), norm(t), None)
    loss.backward()
    for g in (q.grad, t.grad, norm.scale.grad):
        assert torch.isfinite(g).all()


# --------------------------------------------------------------------------- soft triplet: sampling


def sampled_by_hand(q: torch.Tensor, t: torch.Tensor, m: int, seed: int) -> float:
    """The documented draw: for each anchor, uniform keys over its 2B-2 negatives (sorted by
    row index) from one ``torch.rand(2B, 2B-2)`` call; keep the m with the smallest keys."""
    b = len(q)
    keys = torch.rand(2 * b, 2 * b - 2, generator=torch.Generator().manual_seed(seed))
    triplets = []
    for a in range(2 * b):
        negatives = [k for k in range(2 * b) if k % b != a % b]
        chosen = keys[a].argsort()[:m].tolist()
        triplets += [(a, (a + b) % (2 * b), negatives[c]) for c in chosen]
    assert len(triplets) == 2 * b * m
    return brute_soft_triplet(q, t, triplets)


@SETTINGS
@given(batches(min_b=3, max_b=6), st.integers(1, 9), st.integers(0, 2**31 - 1))
def test_sampled_soft_triplet_matches_manual_draws(batch, m, seed):
    q, t = batch
    assume(m < 2 * len(q) - 2)
    loss = soft_triplet_loss(q, t, m, generator=torch.Generator().manual_seed(seed))
    assert loss.item() == pytest.approx(sampled_by_hand(q, t, m, seed), rel=1e-8, abs=1e-8)


def test_sampled_soft_triplet_uses_exactly_three_negatives_per_anchor():
    """B = 3: each anchor has 4 negatives, so 4 possible 3-subsets; the sampled loss must be the
    mean (over 6 x 3 = 18 triplets) of one 3-subset per anchor, found by enumerating all 4^6."""
    gen = torch.Generator().manual_seed(123)
    q = torch.randn(3, 2, generator=gen, dtype=torch.float64)
    t = torch.randn(3, 2, generator=gen, dtype=torch.float64)
    b = 3
    feats = q.tolist() + t.tolist()
    per_anchor = []  # per anchor: the 4 possible sums of 3 of its 4 terms
    for a in range(2 * b):
        d_pos = sqdist(feats[a], feats[(a + b) % (2 * b)])
        terms = [softplus(d_pos - sqdist(feats[a], feats[k])) for k in range(2 * b) if k % b != a % b]
        assert len(terms) == 4
        per_anchor.append([sum(c) for c in itertools.combinations(terms, 3)])
    candidates = [sum(choice) / 18 for choice in itertools.product(*per_anchor)]
    full = soft_triplet_loss(q, t, None).item()
    values = set()
    for seed in range(10):
        loss = soft_triplet_loss(q, t, 3, generator=torch.Generator().manual_seed(seed)).item()
        assert min(abs(loss - c) for c in candidates) < 1e-12
        values.add(round(loss, 12))
    assert len(values) > 1  # different seeds pick different negatives
    assert any(abs(v - full) > 1e-9 for v in values)  # and it is not the full loss


def test_sampled_soft_triplet_reproducible_with_generator_and_global_seed():
    gen = torch.Generator().manual_seed(7)
    q, t = torch.randn(6, 5, generator=gen), torch.randn(6, 5, generator=gen)
    a = soft_triplet_loss(q, t, 3, generator=torch.Generator().manual_seed(42))
    b = soft_triplet_loss(q, t, 3, generator=torch.Generator().manual_seed(42))
    assert torch.equal(a, b)
    # a generator's state advances: two draws from the same generator differ (here)
    g = torch.Generator().manual_seed(42)
    first, second = soft_triplet_loss(q, t, 3, generator=g), soft_triplet_loss(q, t, 3, generator=g)
    assert torch.equal(first, a) and not torch.equal(first, second)
    # generator=None draws from torch's global generator: the global seed fixes the triplets
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(3)
        c = soft_triplet_loss(q, t, 3)
        torch.manual_seed(3)
        d = soft_triplet_loss(q, t, 3)
    assert torch.equal(c, d)


@pytest.mark.parametrize("b", [2, 3, 5])
def test_negatives_at_least_2b_minus_2_equals_all(b):
    gen = torch.Generator().manual_seed(b)
    q, t = torch.randn(b, 4, generator=gen), torch.randn(b, 4, generator=gen)
    full = soft_triplet_loss(q, t, None)
    for m in (2 * b - 2, 2 * b - 1, 1000):
        assert torch.equal(soft_triplet_loss(q, t, m, generator=torch.Generator().manual_seed(9)), full)
    if 2 * b - 3 >= 1:  # one fewer than all is a strict subset (different in general)
        fewer = soft_triplet_loss(q, t, 2 * b - 3, generator=torch.Generator().manual_seed(9))
        assert not torch.equal(fewer, full)


# --------------------------------------------------------------------------- soft triplet: errors


def test_soft_triplet_batch_of_one_raises():
    with pytest.raises(ValueError, match="at least 2"):
        soft_triplet_loss(torch.randn(1, 4), torch.randn(1, 4))
    with pytest.raises(ValueError, match="at least 2"):
        soft_triplet_loss(torch.randn(1, 4), torch.randn(1, 4), None)


@pytest.mark.parametrize("m", [0, -1, -3])
def test_soft_triplet_non_positive_negatives_raise(m):
    with pytest.raises(ValueError, match="negatives_per_anchor"):
        soft_triplet_loss(torch.randn(4, 3), torch.randn(4, 3), m)


SHAPE_MISMATCHES = [
    ((2, 3), (2, 4)),
    ((2, 3), (3, 3)),
    ((3,), (3,)),
    ((2, 3, 1), (2, 3, 1)),
    ((2, 3), (2, 3, 1)),
]


@pytest.mark.parametrize("loss_fn", [soft_triplet_loss, batch_classification_loss])
@pytest.mark.parametrize("qs,ts", SHAPE_MISMATCHES)
def test_shape_mismatch_raises(loss_fn, qs, ts):
    with pytest.raises(ValueError, match=r"must both be \[B, D\]"):
        loss_fn(torch.randn(*qs), torch.randn(*ts))


# --------------------------------------------------------------------------- batch classification


def test_batch_classification_hand_case():
    q = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    t = torch.tensor([[3.0, 1.0], [1.0, 1.0]])
    # logits = Q T^T = [[3, 1], [2, 2]]
    row0 = -(3.0 - math.log(math.exp(3.0) + math.exp(1.0)))  # = log(1 + e^-2)
    row1 = -(2.0 - math.log(2 * math.exp(2.0)))  # = log 2
    assert row0 == pytest.approx(math.log1p(math.exp(-2.0)))
    expected = (row0 + row1) / 2
    assert batch_classification_loss(q, t).item() == pytest.approx(expected, rel=1e-6)


def test_batch_classification_is_in_batch_softmax_over_targets():
    # a query that matches another row's target much better is penalised heavily
    q = torch.tensor([[0.0, 5.0], [0.0, 5.0]])
    t = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    loss = batch_classification_loss(q, t).item()
    # logits = [[0, 5], [0, 5]]: row 0 (label 0) pays softplus(5), row 1 (label 1) softplus(-5)
    assert loss == pytest.approx((softplus(5.0) + softplus(-5.0)) / 2, rel=1e-6)


def test_batch_classification_batch_of_one_is_zero():
    assert batch_classification_loss(torch.randn(1, 3), torch.randn(1, 3)).item() == 0.0


@SETTINGS
@given(batches(min_b=1))
def test_batch_classification_equals_brute_force(batch):
    q, t = batch
    assert batch_classification_loss(q, t).item() == pytest.approx(
        brute_batch_classification(q, t), rel=1e-9, abs=1e-12
    )


@SETTINGS
@given(batches(min_b=1, dtype=torch.float32, bound=100.0))
def test_batch_classification_finite_nonnegative_with_finite_gradients(batch):
    q, t = (x.clone().requires_grad_(True) for x in batch)
    loss = batch_classification_loss(q, t)
    assert torch.isfinite(loss) and loss.item() >= 0.0
    loss.backward()
    assert torch.isfinite(q.grad).all() and torch.isfinite(t.grad).all()


@SETTINGS
@given(batches(min_b=1), st.data())
def test_batch_classification_invariant_to_joint_batch_permutation(batch, data):
    q, t = batch
    perm = torch.tensor(data.draw(st.permutations(range(len(q)))), dtype=torch.long)
    a = batch_classification_loss(q, t).item()
    assert batch_classification_loss(q[perm], t[perm]).item() == pytest.approx(a, rel=1e-12, abs=1e-15)


@pytest.mark.parametrize("b", [1, 2, 5])
@pytest.mark.parametrize("value", [0.0, 0.3])
def test_batch_classification_degenerate_batches(b, value):
    q = torch.full((b, 3), value, requires_grad=True)
    t = torch.full((b, 3), value, requires_grad=True)
    loss = batch_classification_loss(q, t)
    assert loss.item() == pytest.approx(math.log(b), abs=1e-6)  # all logits equal: uniform softmax
    loss.backward()
    assert torch.isfinite(q.grad).all() and torch.isfinite(t.grad).all()


def test_batch_classification_decreases_as_a_positive_moves_closer():
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    far = torch.tensor([[0.0, 1.0], [0.0, 1.0], [0.6, 0.8]])
    losses = []
    for alpha in [0.0, 0.5, 1.0]:
        t = far.clone()
        t[0] = far[0] + alpha * (q[0] - far[0])
        t = NormalizationLayer()(t)
        losses.append(batch_classification_loss(NormalizationLayer()(q), t).item())
    assert losses[0] > losses[1] > losses[2]


# --------------------------------------------------------------------------- base_loss


def test_base_loss_dispatches_by_name():
    gen = torch.Generator().manual_seed(5)
    q, t = torch.randn(5, 4, generator=gen), torch.randn(5, 4, generator=gen)
    assert set(BASE_LOSSES) == {"soft_triplet", "batch_classification"}
    assert torch.equal(base_loss("batch_classification", q, t), batch_classification_loss(q, t))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(11)
        via_name = base_loss("soft_triplet", q, t)
        torch.manual_seed(11)
        direct = soft_triplet_loss(q, t)  # TIRG's default: 3 sampled negatives per anchor
    assert torch.equal(via_name, direct)
    # B = 2: the default of 3 negatives keeps all 2B - 2 = 2, so no randomness is involved
    assert torch.equal(base_loss("soft_triplet", q[:2], t[:2]), soft_triplet_loss(q[:2], t[:2], None))
    assert not torch.equal(base_loss("soft_triplet", q[:2], t[:2]), batch_classification_loss(q[:2], t[:2]))


def test_base_loss_unknown_name_lists_valid_ones():
    with pytest.raises(ValueError) as info:
        base_loss("triplet", torch.randn(2, 3), torch.randn(2, 3))
    msg = str(info.value)
    assert "'triplet'" in msg and "soft_triplet" in msg and "batch_classification" in msg


def test_base_loss_validates_shapes():
    with pytest.raises(ValueError, match=r"\[B, D\]"):
        base_loss("batch_classification", torch.randn(2, 3), torch.randn(2, 4))


# --------------------------------------------------------------------------- NormalizationLayer


@SETTINGS
@given(batches(min_b=1, dtype=torch.float32, bound=100.0))
def test_normalization_output_norm_equals_scale(batch):
    q, _ = batch
    assume((q.norm(dim=1) > 1e-3).all())
    layer = NormalizationLayer()
    assert layer.scale.item() == 4.0
    out = layer(q)
    assert out.shape == q.shape
    assert torch.allclose(out.norm(dim=1), torch.full((len(q),), 4.0), rtol=1e-5)
    # direction preserved: out is a positive multiple of q
    assert torch.allclose(out, 4.0 * q / q.norm(dim=1, keepdim=True), rtol=1e-5, atol=1e-6)


def test_normalization_custom_scale_and_last_dim():
    layer = NormalizationLayer(init_scale=2.5)
    x = torch.tensor([[[3.0, 4.0]], [[0.0, -2.0]]])  # [2, 1, 2]: normalises the last dim
    out = layer(x)
    assert torch.allclose(out, torch.tensor([[[1.5, 2.0]], [[0.0, -2.5]]]))
    assert torch.equal(layer(torch.zeros(2, 3)), torch.zeros(2, 3))  # no NaN for a zero vector


def test_normalization_scale_is_learnable():
    layer = NormalizationLayer()
    assert isinstance(layer.scale, torch.nn.Parameter) and layer.scale.requires_grad
    assert any(p is layer.scale for p in layer.parameters())
    q = torch.tensor([[3.0, 4.0], [1.0, 0.0]])
    t = torch.tensor([[0.0, 1.0], [1.0, 1.0]])
    loss = batch_classification_loss(layer(q), layer(t))
    loss.backward()
    g = layer.scale.grad
    assert g is not None and torch.isfinite(g) and g.item() != 0.0
    # d/ds of sum(s * x/|x|) = sum(x/|x|)
    layer.scale.grad = None
    layer(q).sum().backward()
    assert layer.scale.grad.item() == pytest.approx((0.6 + 0.8) + 1.0)
    # one SGD step on the scale changes the output norm accordingly
    with torch.no_grad():
        layer.scale -= 0.5
    assert layer(q).norm(dim=1).tolist() == pytest.approx([3.5, 3.5])


def test_normalization_fixed_scale():
    layer = NormalizationLayer(init_scale=1.0, learn_scale=False)
    assert not layer.scale.requires_grad
    x = torch.randn(3, 4, requires_grad=True)
    layer(x).sum().backward()
    assert layer.scale.grad is None and x.grad is not None
