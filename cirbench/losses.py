"""Shared metric-learning losses (docs/papers.md §2), as pure functions of embeddings.

* :func:`soft_triplet_loss`: TIRG's soft triplet loss for CSS and MIT-States.
* :func:`batch_classification_loss`: TIRG's batch-based classification for the fashion sets.
* :func:`base_loss`: the one a dataset's protocol names (``ComposerContext.base_loss``).
* :class:`NormalizationLayer`: TIRG's learnable-scale L2 normaliser (training only).

Both losses use the true autograd gradient. TIRG's public code wrote the soft triplet's
backward pass by hand without the factor 2 of d||a-b||^2, i.e. half the true gradient; with
SGD that is the same as our gradient at half the learning rate.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class NormalizationLayer(nn.Module):
    """``s * v / ||v||_2`` with one learnable scalar ``s`` (TIRG: init 4.0), shared by the
    query and the target side.

    See docs/papers.md §2, E2.4."""

    def __init__(self, init_scale: float = 4.0, learn_scale: bool = True) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(float(init_scale)), requires_grad=learn_scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * F.normalize(x, p=2, dim=-1, eps=1e-12)


def _squared_distances(x: torch.Tensor) -> torch.Tensor:
    """Pairwise squared Euclidean distances, exact zeros on the diagonal and a finite gradient
    everywhere (also for identical rows)."""
    diff = x.unsqueeze(1) - x.unsqueeze(0)
    return diff.pow(2).sum(-1)


def soft_triplet_loss(
    queries: torch.Tensor,
    targets: torch.Tensor,
    negatives_per_anchor: int | None = 3,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """TIRG's soft triplet loss.

    The ``2B`` rows ``F = [q_1..q_B; t_1..t_B]`` carry labels ``[0..B-1, 0..B-1]``. Every row
    is an anchor ``i``; its positive ``j`` is the other row of its label; its negatives ``k``
    are all rows of other labels. The loss is the mean over the triplets of
    ``log(1 + exp(d(i, j) - d(i, k)))`` with ``d`` the squared Euclidean distance.

    ``negatives_per_anchor``: TIRG keeps 3 random triplets per anchor (drawn from torch's
    generator, so the global seed fixes them); ``None`` keeps all ``2B - 2``, which makes the
    loss a deterministic, permutation-invariant function of the batch.

    See docs/papers.md §2, E2.5.
    """
    if queries.shape != targets.shape or queries.ndim != 2:
        raise ValueError(
            f"queries and targets must both be [B, D], got {tuple(queries.shape)} "
            f"and {tuple(targets.shape)}"
        )
    b = queries.shape[0]
    if b < 2:
        raise ValueError("soft_triplet_loss needs a batch of at least 2 (one negative)")
    if negatives_per_anchor is not None and negatives_per_anchor < 1:
        raise ValueError(f"negatives_per_anchor must be >= 1 or None, got {negatives_per_anchor}")
    feats = torch.cat([queries, targets], dim=0)
    dist = _squared_distances(feats)
    idx = torch.arange(2 * b, device=feats.device)
    labels = idx % b
    pos = (idx + b) % (2 * b)  # the other row with the same label
    d_pos = dist[idx, pos]  # [2B]
    neg_mask = labels.unsqueeze(0) != labels.unsqueeze(1)  # [2B, 2B]
    n_neg = 2 * b - 2
    neg_idx = neg_mask.nonzero()[:, 1].view(2 * b, n_neg)  # sorted negatives of each anchor
    if negatives_per_anchor is not None and negatives_per_anchor < n_neg:
        keys = torch.rand(2 * b, n_neg, generator=generator, device="cpu").to(feats.device)
        pick = keys.argsort(dim=1)[:, :negatives_per_anchor]
        neg_idx = neg_idx.gather(1, pick)
    d_neg = dist.gather(1, neg_idx)  # [2B, n]
    return F.softplus(d_pos.unsqueeze(1) - d_neg).mean()


def batch_classification_loss(queries: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """TIRG's batch-based classification: logits ``Q T^T``, cross-entropy with label ``i`` for
    row ``i`` (a softmax over the batch's targets).

    See docs/papers.md §2, E2.6."""
    if queries.shape != targets.shape or queries.ndim != 2:
        raise ValueError(
            f"queries and targets must both be [B, D], got {tuple(queries.shape)} "
            f"and {tuple(targets.shape)}"
        )
    logits = queries @ targets.t()
    labels = torch.arange(queries.shape[0], device=queries.device)
    return F.cross_entropy(logits, labels)


BASE_LOSSES = {
    "soft_triplet": soft_triplet_loss,
    "batch_classification": batch_classification_loss,
}


def base_loss(name: str, queries: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The base loss a dataset's protocol names, between (normalised) queries and targets.

    See docs/papers.md §2."""
    try:
        fn = BASE_LOSSES[name]
    except KeyError:
        raise ValueError(f"unknown base loss {name!r}; valid: {', '.join(BASE_LOSSES)}") from None
    return fn(queries, targets)
