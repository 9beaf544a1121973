"""Recall@K as small tensor functions.

The evaluator reduces each query to one number, the **rank of its best correct target**
(0 = first place); Recall@K is then the fraction of queries whose rank is below K — a hit
rate: a query scores when any correct target is in its top K (TIRG's rule, REFERENCE.md §1.0).

Ranking rules, the same for every composer and dataset:

* score = cosine similarity, computed in float64 and rounded to float32. The rounding makes
  scores independent of how queries are chunked (matrix-product kernels sum in an order that
  can depend on the chunk's shape, which moves float64 results in the last bits only).
  Rounding is relative, so it cannot remove such noise around zero: the cosine of two
  orthogonal vectors comes out as 0 or as about +-1e-17 depending on the kernel. Scores with
  magnitude below :data:`ZERO_TOLERANCE` are therefore set to exactly 0.
* the reference image is removed from its own ranking by id; it never counts as a hit, even
  when it is also a correct target (copies of it under other ids stay).
* a query with a candidate list is ranked among those gallery entries only (the others are
  removed like the reference; a correct target outside the list never counts).
* ties are broken by gallery position: among equal scores, the earlier gallery entry ranks
  first. The rank of a target is therefore ``#(score > s) + #(score == s, earlier)``.
* a query with no correct target in its gallery gets rank :data:`NO_HIT` (never a hit).
"""

from __future__ import annotations

from typing import Iterable, Mapping, Sequence

import torch
import torch.nn.functional as F

NO_HIT = torch.iinfo(torch.int64).max

#: cosines with a smaller magnitude are float64 rounding residue and are reported as 0
ZERO_TOLERANCE = 1e-10

#: at most this many scores per chunk (queries x gallery): large galleries get smaller chunks,
#: so peak memory stays near a few hundred MB whatever the gallery size
MAX_CHUNK_SCORES = 1 << 24


def effective_chunk(chunk: int, gallery_size: int) -> int:
    """The number of queries :func:`rank_queries` scores at once: ``chunk``, capped so that a
    chunk holds at most :data:`MAX_CHUNK_SCORES` scores (never below one query)."""
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    return max(1, min(chunk, MAX_CHUNK_SCORES // max(1, gallery_size)))


def cosine_scores(queries: torch.Tensor, gallery: torch.Tensor) -> torch.Tensor:
    """``[Q, N]`` cosine similarities, computed in float64, returned rounded to float32
    (magnitudes below :data:`ZERO_TOLERANCE` become exactly 0)."""
    q = F.normalize(queries.double(), dim=1, eps=1e-12)
    g = F.normalize(gallery.double(), dim=1, eps=1e-12)
    scores = q @ g.t()
    return scores.masked_fill(scores.abs() < ZERO_TOLERANCE, 0.0).float()


def ranks_from_scores(
    scores: torch.Tensor, target_mask: torch.Tensor, exclude_mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Rank (0-based) of the best correct target of each row, under the rules above.

    ``scores`` ``[Q, N]``; ``target_mask`` ``[Q, N]`` bool, True where the gallery entry is a
    correct target; ``exclude_mask`` ``[Q, N]`` bool, True where the entry is removed from
    the ranking (the reference image). Returns ``int64 [Q]``, :data:`NO_HIT` where no target.
    """
    if scores.shape != target_mask.shape:
        raise ValueError(f"scores {tuple(scores.shape)} and target_mask {tuple(target_mask.shape)} differ")
    scores = scores.float()
    keep = torch.ones_like(target_mask) if exclude_mask is None else ~exclude_mask
    if torch.isnan(scores).any():
        raise ValueError("scores contain NaN: the composer produced non-finite embeddings")
    targets = target_mask & keep
    neg_inf = torch.tensor(float("-inf"), device=scores.device)
    target_scores = torch.where(targets, scores, neg_inf)
    best = target_scores.max(dim=1).values  # [Q]
    # first position holding the best target score (argmax returns the first maximum)
    best_pos = torch.where(targets & (scores == best.unsqueeze(1)), 0, 1).argmin(dim=1)
    n = scores.shape[1]
    positions = torch.arange(n, device=scores.device).unsqueeze(0)
    above = (scores > best.unsqueeze(1)) & keep
    tied_before = (scores == best.unsqueeze(1)) & (positions < best_pos.unsqueeze(1)) & keep
    ranks = above.sum(dim=1) + tied_before.sum(dim=1)
    has_target = targets.any(dim=1)
    return torch.where(has_target, ranks, torch.full_like(ranks, NO_HIT))


def rank_queries(
    query_emb: torch.Tensor,
    gallery_emb: torch.Tensor,
    gallery_ids: Sequence[int] | torch.Tensor,
    reference_ids: Sequence[int] | torch.Tensor,
    targets: Sequence[Iterable[int]],
    chunk: int = 1024,
    candidates: Sequence[Iterable[int] | None] | None = None,
) -> torch.Tensor:
    """Ranks of the best correct target for every query, ``chunk`` queries at a time.

    Memory is bounded by ``chunk x len(gallery)`` (``chunk`` capped by
    :func:`effective_chunk`); the result does not depend on ``chunk``.
    ``targets[i]`` are the dataset ids that count as correct for query ``i``; ids not in the
    gallery are ignored. ``candidates[i]`` (optional; None for a query ranked against the
    whole gallery) restricts query ``i``'s ranking to those gallery ids.
    """
    chunk = effective_chunk(chunk, gallery_emb.shape[0])
    n_q = query_emb.shape[0]
    if not (len(reference_ids) == len(targets) == n_q):
        raise ValueError(
            f"{n_q} query embeddings, {len(reference_ids)} reference ids, {len(targets)} target sets"
        )
    gallery_ids = torch.as_tensor(gallery_ids, dtype=torch.long)
    if gallery_ids.numel() != gallery_emb.shape[0]:
        raise ValueError(f"{gallery_ids.numel()} gallery ids for {gallery_emb.shape[0]} embeddings")
    device = gallery_emb.device
    position = {int(g): i for i, g in enumerate(gallery_ids.tolist())}
    if len(position) != len(gallery_ids):
        raise ValueError("gallery ids are not unique")
    # (query row, gallery column) of every correct target, sorted by row, and the column of
    # each query's reference (-1 when it is not in the gallery)
    t_rows, t_cols = [], []
    for qi, ts in enumerate(targets):
        cols = sorted({position[int(t)] for t in ts if int(t) in position})
        t_rows += [qi] * len(cols)
        t_cols += cols
    t_rows_t = torch.tensor(t_rows, dtype=torch.long)
    t_cols_t = torch.tensor(t_cols, dtype=torch.long)
    ref_cols = torch.tensor([position.get(int(r), -1) for r in torch.as_tensor(reference_ids).tolist()], dtype=torch.long)
    # queries with a candidate list: (row, column) of each candidate, sorted by row
    restricted = torch.zeros(n_q, dtype=torch.bool)
    c_rows: list[int] = []
    c_cols: list[int] = []
    if candidates is not None:
        if len(candidates) != n_q:
            raise ValueError(f"{n_q} query embeddings, {len(candidates)} candidate lists")
        for qi, cs in enumerate(candidates):
            if cs is None:
                continue
            restricted[qi] = True
            cols = sorted({position[int(c)] for c in cs if int(c) in position})
            c_rows += [qi] * len(cols)
            c_cols += cols
    c_rows_t = torch.tensor(c_rows, dtype=torch.long)
    c_cols_t = torch.tensor(c_cols, dtype=torch.long)
    out = torch.empty(n_q, dtype=torch.long)
    for start in range(0, n_q, chunk):
        stop = min(start + chunk, n_q)
        scores = cosine_scores(query_emb[start:stop].to(device), gallery_emb)
        target_mask = torch.zeros_like(scores, dtype=torch.bool)
        lo, hi = torch.searchsorted(t_rows_t, torch.tensor([start, stop])).tolist()
        target_mask[(t_rows_t[lo:hi] - start).to(device), t_cols_t[lo:hi].to(device)] = True
        exclude = torch.zeros_like(target_mask)
        if restricted[start:stop].any():  # leave out everything but each list's candidates
            exclude[restricted[start:stop].to(device)] = True
            lo, hi = torch.searchsorted(c_rows_t, torch.tensor([start, stop])).tolist()
            exclude[(c_rows_t[lo:hi] - start).to(device), c_cols_t[lo:hi].to(device)] = False
        refs = ref_cols[start:stop]
        rows = torch.nonzero(refs >= 0).flatten()
        exclude[rows.to(device), refs[rows].to(device)] = True
        out[start:stop] = ranks_from_scores(scores, target_mask, exclude).cpu()
    return out


def recall_at_k(ranks: torch.Tensor, ks: Iterable[int]) -> dict[int, float]:
    """Fraction of queries whose best correct target ranks in the top K, for each K."""
    ranks = torch.as_tensor(ranks)
    if ranks.numel() == 0:
        raise ValueError("recall_at_k of zero queries is undefined")
    return {int(k): float((ranks < k).double().mean()) for k in ks}


def recall_by_group(
    ranks: torch.Tensor, groups: Sequence[str], ks: Iterable[int]
) -> dict[str, dict[int, float]]:
    """:func:`recall_at_k` for each query group."""
    ks = list(ks)
    ranks = torch.as_tensor(ranks)
    if len(groups) != ranks.numel():
        raise ValueError(f"{ranks.numel()} ranks but {len(groups)} group labels")
    by: dict[str, list[int]] = {}
    for i, g in enumerate(groups):
        by.setdefault(g, []).append(i)
    return {g: recall_at_k(ranks[idx], ks) for g, idx in sorted(by.items())}


def format_recalls(recalls: Mapping[int, float]) -> dict[str, float]:
    """``{1: 0.5}`` -> ``{"R@1": 0.5}`` for results and tables."""
    return {f"R@{k}": v for k, v in recalls.items()}
