"""Recall@K as small tensor functions.

The evaluator reduces each query to one number, the **rank of its best correct target**
(0 = first place); Recall@K is then the fraction of queries whose rank is below K — a hit
rate: a query scores when any correct target is in its top K (TIRG's rule, docs/papers.md §1.0).

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

The scores are *defined* as above; :func:`rank_queries` does not compute all of them in
float64. It scores the gallery with float32 products of the unit vectors, which are within
:func:`score_error_bound` (about ``(d + 6) * 2**-24``) of the defined score whatever the kernel
or tile shape, and computes the defined score, pair by pair, only for each query's targets
and for the entries whose float32 score lies within that bound of its best target's score.
Entries further above count as ahead, entries further below as behind, so the ranks are
exactly those of the rules on the defined scores, independent of the chunk size, of the query
order and of the device. :func:`rank_and_top_k` takes the top-K ids from the same products:
the exact top-K lies among the entries within twice the bound of the K-th best float32 score,
and only near-ties among those are re-scored. On the CPU the products are made tile by tile
(:data:`TILE_ROWS` x :data:`TILE_COLUMNS`), each tile compared and counted while it is in the
cache, with the row blocks in parallel threads; the speed is that of the products
(benchmarks/ranking.py measures it against a float32 product plus a top-50).
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
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


def score_error_bound(dim: int) -> float:
    """A bound on ``|fast - exact|`` for one score of :func:`rank_queries`'s fast pass.

    The fast pass multiplies float32 copies of the float64-normalised embeddings in float32.
    With ``u = 2**-24``: the float32 unit vectors (the query rounded from float64, the
    gallery row multiplied by its rounded inverse norm in float32) are within ``u`` and
    ``2u + u**2`` of the float64 unit vectors, which moves their dot product by at most
    ``3u + 3u**2``; the float32 dot product of ``dim`` terms adds at most
    ``gamma_dim * (1 + u)**2`` with ``gamma_dim = dim*u / (1 - dim*u)``, whatever the
    summation order or fused multiply-adds (any BLAS, any chunk shape; Higham, *Accuracy and
    Stability of Numerical Algorithms*, 2nd ed., §3.1); the exact score is the float64 cosine
    (error below ``1e-12``) rounded to float32 (``u/2``), magnitudes below
    :data:`ZERO_TOLERANCE` set to 0. The returned bound, ``(dim + 6) * u * (1 + 2*dim*u) +
    2 * ZERO_TOLERANCE``, covers the sum. Raises ``ValueError`` for ``dim < 1`` or
    ``dim * u >= 0.1`` (dimensions above 1.6M, where it would be useless).
    """
    u = 2.0**-24
    if dim < 1 or dim * u >= 0.1:
        raise ValueError(f"embedding dimension must be in [1, {int(0.1 / u)}), got {dim}")
    return (dim + 6) * u * (1 + 2 * dim * u) + 2 * ZERO_TOLERANCE


def _scratch(scratch: dict | None, name: str, shape: tuple[int, ...], dtype: torch.dtype,
             device: torch.device) -> torch.Tensor:
    """An uninitialised contiguous tensor, from ``scratch`` (this thread's buffer ``name``,
    grown when too small) so that repeated calls touch no fresh memory; new when ``scratch``
    is None."""
    need = 1
    for n in shape:
        need *= n
    if scratch is None:
        return torch.empty(shape, dtype=dtype, device=device)
    key = (threading.get_ident(), name)
    buf = scratch.get(key)
    if buf is None or buf.numel() < need or buf.dtype != dtype or buf.device != device:
        buf = scratch[key] = torch.empty(max(need, 2 * (0 if buf is None else buf.numel())), dtype=dtype,
                                         device=device)
    return buf[:need].view(shape)


def exact_pair_scores(
    query_unit: torch.Tensor,
    gallery_emb: torch.Tensor,
    gallery_inv_norm: torch.Tensor,
    rows: torch.Tensor,
    cols: torch.Tensor,
    scratch: dict | None = None,
) -> torch.Tensor:
    """Scores of the pairs ``(rows[k], cols[k])`` under the module's rule, ``float32 [P]``.

    ``query_unit`` ``[Q, D]`` float64 rows normalised (``F.normalize``); ``gallery_emb``
    ``[N, D]`` the raw gallery; ``gallery_inv_norm`` ``[N]`` float64 ``1 / max(|g|, 1e-12)``.
    Each pair is computed on its own (float64 dot product scaled by the inverse norm,
    magnitudes below :data:`ZERO_TOLERANCE` set to 0, rounded to float32), so a pair's score
    never depends on which other pairs are computed with it. ``scratch`` (optional, a dict
    kept by the caller): reuse its buffers for the gathered rows (the same arithmetic).
    """
    if rows.numel() == 0:
        return torch.empty(0, dtype=torch.float32, device=query_unit.device)
    p, d, device = rows.numel(), query_unit.shape[1], query_unit.device
    a = torch.index_select(query_unit, 0, rows, out=_scratch(scratch, "q", (p, d), query_unit.dtype, device))
    b = torch.index_select(gallery_emb, 0, cols, out=_scratch(scratch, "g", (p, d), gallery_emb.dtype, device))
    if b.dtype != torch.float64:
        b = _scratch(scratch, "g64", (p, d), torch.float64, device).copy_(b)
    s = torch.bmm(a.unsqueeze(1), b.unsqueeze(2)).flatten() * gallery_inv_norm.index_select(0, cols)
    return s.masked_fill(s.abs() < ZERO_TOLERANCE, 0.0).float()


_BYTE_SUM = 0x0101010101010101


def _true_counts(mask: torch.Tensor) -> torch.Tensor:
    """Number of True in each row of a contiguous bool ``[R, 8 * W]`` mask, ``int64 [R]``.

    Viewed as ``int64 [R, W]``, each word holds 8 bytes that are 0 or 1; multiplying by
    ``0x0101...01`` puts their sum (at most 8) in the top byte (integer products wrap in
    torch, two's complement). Exact; several times faster on CPU than summing the mask as
    bytes.
    """
    return ((mask.view(torch.int64) * _BYTE_SUM) >> 56).sum(dim=1)


def _true_positions(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(row, column) of every True of a contiguous bool ``[R, 8 * W]`` mask, row-major; fast
    when the mask is sparse (the int64 words that hold a True first, then their bytes)."""
    w_row, w_col = torch.nonzero(mask.view(torch.int64), as_tuple=True)
    k, byte = torch.nonzero(mask.view(mask.shape[0], -1, 8)[w_row, w_col], as_tuple=True)
    return w_row[k], w_col[k] * 8 + byte


#: when the entries at or above the lower threshold fill at most this many 8-entry words per
#: query of a tile, their positions are taken and split by the upper threshold (one compare
#: pass fewer); else a second compare finds the entries above the upper threshold
SPARSE_ENTRIES_PER_QUERY = 16

#: on the CPU the fast pass works on tiles of at most ``TILE_ROWS`` queries x ``TILE_COLUMNS``
#: gallery entries (8 MB of float32 scores; ``TILE_COLUMNS`` a multiple of 8): each tile's
#: product is compared, counted and searched for the top-k while it is still in the cache, and
#: the row blocks run in parallel threads. On other devices a tile is a whole chunk (one
#: product per chunk). Tiles change the speed only, never a rank or a top-k id.
TILE_ROWS = 512
TILE_COLUMNS = 4096

#: the fast pass keeps each query's ``k + TOP_K_MARGIN`` best fast scores from tile to tile,
#: so that near-ties at the k-th place seldom need the slow path (the query's row searched
#: again)
TOP_K_MARGIN = 14


class _full_float32_matmul:
    """Within the block, float32 matrix products run in full float32 (no TF32 / bfloat16
    shortcut that a caller may have enabled): :func:`score_error_bound` assumes it."""

    def __enter__(self):
        self.prev = torch.get_float32_matmul_precision()
        if self.prev != "highest":
            torch.set_float32_matmul_precision("highest")
        return self

    def __exit__(self, *exc):
        if self.prev != "highest":
            torch.set_float32_matmul_precision(self.prev)
        return False


class _worker_threads:
    """``.map`` over parallel threads on a CPU with several torch threads: each worker (and
    the caller, meanwhile) runs its operations on one thread, so that many small operations
    do not wait at a barrier of torch's threads after every one (costly when other processes
    share the cores). Elsewhere the built-in ``map``. Restores the thread count on exit."""

    def __init__(self, device: torch.device):
        self.threads = torch.get_num_threads() if device.type == "cpu" else 1
        self.pool: ThreadPoolExecutor | None = None

    def __enter__(self):
        if self.threads > 1:
            torch.set_num_threads(1)
            self.pool = ThreadPoolExecutor(self.threads, initializer=torch.set_num_threads, initargs=(1,))
        return self

    def map(self, fn, items):
        return map(fn, items) if self.pool is None else self.pool.map(fn, items)

    def __exit__(self, *exc):
        if self.pool is not None:
            self.pool.shutdown()
            torch.set_num_threads(self.threads)
        return False


def _exact_top_k(rows: torch.Tensor, cols: torch.Tensor, exact: torch.Tensor, k: int, n_rows: int) -> list[list[int]]:
    """The first ``k`` columns of each row by (exact score descending, column ascending), for
    pairs ``(rows, cols)`` with scores ``exact``; ``n_rows`` lists (rows ``0..n_rows-1``)."""
    order = torch.argsort(cols, stable=True)
    order = order[torch.argsort(-exact[order].double(), stable=True)]
    order = order[torch.argsort(rows[order], stable=True)]
    counts = torch.bincount(rows, minlength=n_rows).tolist()
    cols_sorted = cols[order].tolist()
    out, at = [], 0
    for c in counts:
        out.append(cols_sorted[at : at + min(c, k)])
        at += c
    return out


def _rank_and_top(
    query_emb: torch.Tensor,
    gallery_emb: torch.Tensor,
    gallery_ids: torch.Tensor,
    reference_ids: Sequence[int] | torch.Tensor,
    targets: Sequence[Iterable[int]],
    k: int,
    chunk: int,
    candidates: Sequence[Iterable[int] | None] | None,
) -> tuple[torch.Tensor, list[list[int]]]:
    """Ranks (as :func:`rank_queries`) and, when ``k > 0``, the top-``k`` gallery ids (as
    :func:`top_k_ids`) of every query, from one float32 product per tile. Inputs checked by
    the callers."""
    n_g, n_q = gallery_emb.shape[0], query_emb.shape[0]
    chunk = effective_chunk(chunk, n_g)
    id_list = gallery_ids.tolist()
    position = {g: i for i, g in enumerate(id_list)}
    device = gallery_emb.device
    ref_cols = [position.get(int(r), -1) for r in torch.as_tensor(reference_ids).tolist()]
    # (query row, gallery column) of every correct target that counts (not the reference,
    # inside the candidate list if any), sorted by row; the same for candidates
    t_rows: list[int] = []
    t_cols: list[int] = []
    c_rows: list[int] = []
    c_cols: list[int] = []
    restricted = [False] * n_q
    for qi, ts in enumerate(targets):
        cols = {position[int(t)] for t in ts if int(t) in position}
        cols.discard(ref_cols[qi])
        cs = None if candidates is None else candidates[qi]
        if cs is not None:
            restricted[qi] = True
            cand = {position[int(c)] for c in cs if int(c) in position}
            cand.discard(ref_cols[qi])
            cols &= cand
            c_rows += [qi] * len(cand)
            c_cols += sorted(cand)
        t_rows += [qi] * len(cols)
        t_cols += sorted(cols)
    t_rows_t = torch.tensor(t_rows, dtype=torch.long)
    t_cols_t = torch.tensor(t_cols, dtype=torch.long)
    c_rows_t = torch.tensor(c_rows, dtype=torch.long)
    c_cols_t = torch.tensor(c_cols, dtype=torch.long)
    restricted_t = torch.tensor(restricted, dtype=torch.bool)
    ref_cols_t = torch.tensor(ref_cols, dtype=torch.long)
    has_target = torch.zeros(n_q, dtype=torch.bool)
    has_target[t_rows_t] = True
    out = torch.full((n_q,), NO_HIT, dtype=torch.long)
    tops: list[list[int]] = [[] for _ in range(n_q if k else 0)]
    wanted = has_target | (k > 0 and n_g > 0)  # the queries that need any work
    if not wanted.any():
        return out, tops
    with _worker_threads(device) as workers:
        dim = query_emb.shape[1]
        bound = score_error_bound(max(dim, 1))  # d = 0: every product is exactly 0
        # two fast scores further apart than this have exact scores in the same order (the
        # float64 differences of float32 scores, |s| <= 1 + bound, are within 2**-52 of exact)
        separated = 2 * bound + 1e-15
        query_unit = F.normalize(query_emb.to(device).double(), dim=1, eps=1e-12)
        fast_rows = wanted & ~restricted_t
        if device.type == "cpu":
            tile_rows, tile_cols = TILE_ROWS, TILE_COLUMNS
        else:
            tile_rows, tile_cols = chunk, -(-max(n_g, 1) // 8) * 8
        # the gallery's inverse float64 norms, and (for the fast pass) its float32 unit rows, zero
        # rows appended up to whole 8-entry words; converted in slices of a few hundred rows (no
        # float64 copy of the gallery: large temporaries cost more in page faults than in arithmetic)
        n_pad = -(-n_g // 8) * 8
        inv_norm = torch.empty(n_g, dtype=torch.float64, device=device)
        gallery_unit = torch.empty(n_pad, dim, dtype=torch.float32, device=device) if fast_rows.any() else None
        if gallery_unit is not None:
            gallery_unit[n_g:] = 0.0
        step = 256

        def prepare(s: int) -> None:
            g = gallery_emb[s : s + step]
            inv_norm[s : s + step] = 1.0 / torch.linalg.vector_norm(g, dim=1, dtype=torch.float64).clamp_min_(1e-12)
            if gallery_unit is None:
                return
            if g.dtype == torch.float32:  # a float32 product: within 2u of the float64 unit row
                torch.mul(g, inv_norm[s : s + step, None].float(), out=gallery_unit[s : s + len(g)])
            else:
                gallery_unit[s : s + len(g)] = g.double() * inv_norm[s : s + step, None]

        list(workers.map(prepare, range(0, n_g, step)))
        tile_cols = min(tile_cols, n_pad)
        inf = torch.tensor(float("inf"), device=device)
        best_all = torch.full((n_q,), float("-inf"), device=device)
        best_pos_all = torch.full((n_q,), n_g, dtype=torch.long, device=device)
        ranks = torch.zeros(n_q, dtype=torch.long, device=device)

        scratch: dict = {}  # per-thread buffers of exact_pair_scores

        def ahead_of_best(rows: torch.Tensor, cols: torch.Tensor, exact: torch.Tensor | None = None) -> torch.Tensor:
            """Whether each pair ``(rows, cols)`` ranks before its row's best target (bool)."""
            if exact is None:
                exact = exact_pair_scores(query_unit, gallery_emb, inv_norm, rows, cols, scratch)
            b = best_all[rows]
            return (exact > b) | ((exact == b) & (cols < best_pos_all[rows]))

        # per chunk of queries: exact scores of the targets and the best target of each row
        # (highest exact score, then earliest position; -inf and n_g for a row without a target);
        # queries with a candidate list: exact scores of their candidates only
        for start in range(0, n_q, chunk):
            stop = min(start + chunk, n_q)
            lo, hi = torch.searchsorted(t_rows_t, torch.tensor([start, stop])).tolist()
            if lo < hi:
                tr, tc = t_rows_t[lo:hi].to(device), t_cols_t[lo:hi].to(device)
                t_score = exact_pair_scores(query_unit, gallery_emb, inv_norm, tr, tc)
                best_all.scatter_reduce_(0, tr, t_score, "amax")
                is_best = t_score == best_all[tr]
                best_pos_all.scatter_reduce_(0, tr[is_best], tc[is_best], "amin")
            lo, hi = torch.searchsorted(c_rows_t, torch.tensor([start, stop])).tolist()
            if lo < hi:
                cr, cc = c_rows_t[lo:hi].to(device), c_cols_t[lo:hi].to(device)
                exact = exact_pair_scores(query_unit, gallery_emb, inv_norm, cr, cc)
                ranks.index_add_(0, cr, ahead_of_best(cr, cc, exact).long())
                if k:
                    for r, cols in enumerate(_exact_top_k(cr - start, cc, exact, k, stop - start)):
                        if restricted[start + r]:
                            tops[start + r] = [id_list[c] for c in cols]

        # the fast rows, in blocks of at most tile_rows (on the CPU, fewer when that keeps every
        # worker busy)
        rows = torch.nonzero(fast_rows).flatten()
        if device.type == "cpu":
            tile_rows = max(1, min(tile_rows, -(-len(rows) // workers.threads)))
        blocks = list(torch.split(rows, tile_rows)) if len(rows) else []
        buffers: dict[tuple[int, str], torch.Tensor] = {}

        def tile(name: str, rows: int, cols: int, dtype: torch.dtype) -> torch.Tensor:
            """A contiguous ``[rows, cols]`` view of this thread's buffer, reused from tile to tile."""
            key = (threading.get_ident(), name)
            if key not in buffers:
                buffers[key] = torch.empty(tile_rows * tile_cols, dtype=dtype, device=device)
            return buffers[key][: rows * cols].view(rows, cols)

        def scan(block: torch.Tensor) -> torch.Tensor:
            """Fast pass over the rows ``block`` (global indices, CPU): per row, the number of
            entries ranked before its best target; writes the rows' top-k into ``tops``."""
            m, block_d = len(block), block.to(device)
            q32 = query_unit.index_select(0, block_d).float()
            b = best_all[block_d].double()
            # thresholds rounded outwards to float32, so the bound holds after rounding; +inf for
            # a row without a target (nothing counted)
            aimed = torch.isfinite(b)
            upper = torch.where(aimed, torch.nextafter((b + bound).float(), inf), inf).unsqueeze(1)
            lower = torch.where(aimed, torch.nextafter((b - bound).float(), -inf), inf).unsqueeze(1)
            any_aimed = bool(aimed.any())
            refs = ref_cols_t[block].to(device)
            counted = torch.zeros(m, dtype=torch.long, device=device)
            # each row's best fast scores so far (kept: the entries that may still be in the
            # exact top-k), and the largest fast score left out of them
            width = k + TOP_K_MARGIN
            if k:
                top_v = torch.full((m, width), float("-inf"), device=device)
                top_c = torch.zeros(m, width, dtype=torch.long, device=device)
                cut = torch.full((m, 1), float("-inf"), device=device)
            for t, c0 in enumerate(range(0, n_pad, tile_cols)):
                w = min(tile_cols, n_pad - c0)
                s = tile("scores", m, w, torch.float32)
                torch.mm(q32, gallery_unit[c0 : c0 + w].t(), out=s)
                if c0 + w > n_g:
                    s[:, n_g - c0 :] = float("-inf")  # padding
                mine = (refs >= c0) & (refs < c0 + w)
                s[mine.nonzero().flatten(), refs[mine] - c0] = float("-inf")  # the reference
                if any_aimed:
                    window = tile("window", m, w, torch.bool)
                    torch.ge(s, lower, out=window)  # ahead of the best target, or within the bound
                    # int64 words holding a True: at least 1/8 of the Trues, at most all of them
                    if int(torch.count_nonzero(window.view(torch.int64))) <= SPARSE_ENTRIES_PER_QUERY * m:
                        # few (small ranks, as after training): split them by the upper threshold
                        r, c = _true_positions(window)
                        ahead = s[r, c] > upper[r, 0]
                        counted.index_add_(0, r[ahead], torch.ones_like(r[ahead]))
                        r, c = r[~ahead], c[~ahead]
                    else:
                        above = tile("above", m, w, torch.bool)
                        torch.gt(s, upper, out=above)
                        counted += _true_counts(above)
                        torch.bitwise_xor(window, above, out=window)  # lower <= s <= upper
                        r, c = _true_positions(window)
                    # the entries within the bound: exact scores (while the tile's gallery rows are
                    # in the cache) and the tie rule
                    counted.index_add_(0, r, ahead_of_best(block_d[r], c + c0).long())
                if k and t == 0:
                    kt = min(width, w)
                    v, i = torch.topk(s, kt, dim=1)
                    top_v[:, :kt], top_c[:, :kt] = v, i + c0
                    if kt < w:
                        cut[:, 0] = v[:, -1]
                elif k:
                    # only entries at or above the k-th best so far less the separation can
                    # still be among the candidates (the k-th best only rises): find them
                    # with one compare, merge them into the kept ones
                    least = torch.nextafter((top_v[:, k - 1].double() - separated).float(), -inf)
                    hits = tile("hits", m, w, torch.bool)
                    torch.ge(s, least.unsqueeze(1), out=hits)
                    r, c = _true_positions(hits)
                    if len(r):
                        per_row = torch.bincount(r, minlength=m)
                        slot = torch.arange(len(r), device=device) - (torch.cumsum(per_row, 0) - per_row)[r]
                        extra = int(per_row.max())
                        mv = torch.full((m, width + extra), float("-inf"), device=device)
                        mc = torch.zeros(m, width + extra, dtype=torch.long, device=device)
                        mv[:, :width], mc[:, :width] = top_v, top_c
                        mv[r, width + slot], mc[r, width + slot] = s[r, c], c + c0
                        v, i = torch.topk(mv, width + 1, dim=1)
                        top_v, top_c = v[:, :width], mc.gather(1, i[:, :width])
                        cut = torch.maximum(cut, v[:, width:])
            if k:
                _top_of_block(k, block, block_d, q32, refs, top_v, top_c, cut, separated, query_unit,
                              gallery_emb, gallery_unit, inv_norm, n_g, id_list, tops, scratch)
            return counted

        # the others: float32 products tile by tile; exact scores only where the fast ones cannot
        # decide (within the bound of the best target's score; near-ties of the top-k)
        with _full_float32_matmul():
            counts = list(workers.map(scan, blocks))
        for block, counted in zip(blocks, counts):
            ranks.index_add_(0, block.to(device), counted)
        out[has_target] = ranks.cpu()[has_target]
        return out, tops


def _top_of_block(k, block, block_d, q32, refs, top_v, top_c, cut, separated, query_unit, gallery_emb,
                  gallery_unit, inv_norm, n_g, id_list, tops, scratch) -> None:
    """The exact top-``k`` of the queries ``block`` from their kept fast scores.

    ``top_v``/``top_c`` ``[m, k + TOP_K_MARGIN]``: each row's best fast scores (float32,
    -inf where fewer) and their columns; ``cut`` ``[m, 1]``: the largest fast score of an
    entry left out of them. With ``F`` the k-th best kept fast score of a row, at least ``k``
    entries have exact scores ``>= F - bound``, so the exact top-k lies among the entries with
    fast scores ``>= F - 2 * bound``: the candidates. Sorted by fast score, candidates further
    than ``separated`` apart keep their order exactly; runs of closer ones are ordered by
    their exact scores, then by position. A row whose ``cut`` is a candidate's score (many
    near-ties) is searched again over its whole row.
    """
    m = len(block)
    device = top_v.device
    v, j = torch.topk(top_v, top_v.shape[1], dim=1)
    cols = top_c.gather(1, j)
    vd = v.double()
    thr = vd[:, k - 1] - separated
    cutd = cut.double().squeeze(1)
    again = (cutd >= thr) & torch.isfinite(cutd)
    cand = (vd >= thr[:, None]) & torch.isfinite(vd)
    vc = torch.where(cand, vd, torch.tensor(float("-inf"), dtype=torch.float64, device=device))
    near = (vc[:, :-1] - vc[:, 1:]) <= separated  # False where an -inf is involved
    rescore = torch.zeros_like(cand)
    rescore[:, 1:] |= near
    rescore[:, :-1] |= near
    rr, cc = torch.nonzero(rescore, as_tuple=True)
    key = vc.clone()
    key[rr, cc] = exact_pair_scores(query_unit, gallery_emb, inv_norm, block_d[rr], cols[rr, cc], scratch).double()
    run = torch.cat([torch.zeros(m, 1, dtype=torch.long, device=device), (~near).long().cumsum(dim=1)], dim=1)
    order = torch.argsort(cols, dim=1, stable=True)
    order = order.gather(1, torch.argsort(-key.gather(1, order), dim=1, stable=True))
    order = order.gather(1, torch.argsort(run.gather(1, order), dim=1, stable=True))
    keep = cand.gather(1, order)[:, :k]
    ranked = cols.gather(1, order)[:, :k]
    again_l, keep_l, ranked_l, block_l = again.tolist(), keep.cpu().tolist(), ranked.cpu().tolist(), block.tolist()
    for r in range(m):
        if again_l[r]:
            # the whole row: every entry with a fast score at or above the threshold, exactly
            s = (q32[r : r + 1] @ gallery_unit[:n_g].t()).flatten()
            if refs[r] >= 0:
                s[refs[r]] = float("-inf")
            c = torch.nonzero(s.double() >= thr[r]).flatten()
            c = c[c != refs[r]]
            exact = exact_pair_scores(query_unit, gallery_emb, inv_norm, torch.full_like(c, int(block_l[r])), c)
            picked = _exact_top_k(torch.zeros_like(c), c, exact, k, 1)[0]
        else:
            picked = [col for col, ok in zip(ranked_l[r], keep_l[r]) if ok]
        tops[block_l[r]] = [id_list[col] for col in picked]


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

    ``query_emb`` ``[Q, D]``, ``gallery_emb`` ``[N, D]`` (finite floats, same device);
    ``targets[i]`` are the dataset ids that count as correct for query ``i``; ids not in the
    gallery are ignored. ``candidates[i]`` (optional; None for a query ranked against the
    whole gallery) restricts query ``i``'s ranking to those gallery ids. Returns ``int64 [Q]``
    on the CPU (:data:`NO_HIT` for a query without a correct target left).

    The ranks are those of the module's rules on exact scores (float64 cosines rounded to
    float32), computed fast: float32 matrix products (on the CPU tile by tile, see
    :data:`TILE_ROWS`; memory: the float32 unit gallery plus small per-tile buffers, at most
    ``chunk x N`` scores elsewhere, ``chunk`` capped by :func:`effective_chunk`) give scores
    within :func:`score_error_bound` of the exact ones. The exact score of each query's
    targets is computed pair by pair; a gallery entry whose fast score is above the best
    target's exact score by more than the bound is counted as above it, one below by more
    than the bound is not, and only the few entries in between are re-scored exactly and
    compared by the tie rule. Queries with a candidate list are scored exactly on their
    candidates only. Hence the ranks do not depend on ``chunk``, on the order of the queries
    or on the matrix-product kernel (CPU or CUDA).

    Raises ``ValueError`` for mismatched lengths, duplicate gallery ids, ``chunk < 1`` or
    non-finite embeddings.

    See docs/papers.md §1.0.
    """
    return rank_and_top_k(query_emb, gallery_emb, gallery_ids, reference_ids, targets, 0, chunk, candidates)[0]


def rank_and_top_k(
    query_emb: torch.Tensor,
    gallery_emb: torch.Tensor,
    gallery_ids: Sequence[int] | torch.Tensor,
    reference_ids: Sequence[int] | torch.Tensor,
    targets: Sequence[Iterable[int]],
    k: int,
    chunk: int = 1024,
    candidates: Sequence[Iterable[int] | None] | None = None,
) -> tuple[torch.Tensor, list[list[int]]]:
    """:func:`rank_queries` and :func:`top_k_ids` of the same queries from one pass: each
    tile's float32 product is counted for the ranks and searched for the top-``k`` (the
    exact top-k is then taken among the entries within twice the bound of the k-th fast
    score, re-scoring only near-ties). Returns ``(ranks int64 [Q], [Q] lists of at most k
    gallery ids, best first)``; ``k = 0`` gives empty lists. Arguments and errors as
    :func:`rank_queries`, plus ``ValueError`` for ``k < 0``.

    See docs/papers.md §1.0.
    """
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    n_g = gallery_emb.shape[0]
    effective_chunk(chunk, n_g)  # checks chunk
    n_q = query_emb.shape[0]
    if not (len(reference_ids) == len(targets) == n_q):
        raise ValueError(
            f"{n_q} query embeddings, {len(reference_ids)} reference ids, {len(targets)} target sets"
        )
    gallery_ids = torch.as_tensor(gallery_ids, dtype=torch.long)
    if gallery_ids.numel() != n_g:
        raise ValueError(f"{gallery_ids.numel()} gallery ids for {n_g} embeddings")
    if candidates is not None and len(candidates) != n_q:
        raise ValueError(f"{n_q} query embeddings, {len(candidates)} candidate lists")
    if len(set(gallery_ids.tolist())) != n_g:
        raise ValueError("gallery ids are not unique")
    if not (torch.isfinite(query_emb).all() and torch.isfinite(gallery_emb.sum(dim=1)).all()):
        if not torch.isfinite(gallery_emb).all() or not torch.isfinite(query_emb).all():
            raise ValueError("scores contain NaN: the composer produced non-finite embeddings")
    ranks, tops = _rank_and_top(query_emb, gallery_emb, gallery_ids, reference_ids, targets, k, chunk, candidates)
    return ranks, tops if k else [[] for _ in range(n_q)]


def top_k_ids(
    query_emb: torch.Tensor,
    gallery_emb: torch.Tensor,
    gallery_ids: Sequence[int] | torch.Tensor,
    reference_ids: Sequence[int] | torch.Tensor,
    k: int,
    chunk: int = 1024,
    candidates: Sequence[Iterable[int] | None] | None = None,
) -> list[list[int]]:
    """The ``k`` best gallery ids of each query, best first, under the module's rules.

    Exact scores (as :func:`cosine_scores`; computed as in :func:`rank_and_top_k`), the
    reference left out, only the candidates when ``candidates[i]`` is given, ties to the
    earlier gallery entry; a query with fewer than ``k`` entries left gets them all.
    ``query_emb`` ``[Q, D]``, ``gallery_emb`` ``[N, D]``. Raises ``ValueError`` for
    ``k < 1``, mismatched lengths, duplicate gallery ids or non-finite embeddings.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    n_q = query_emb.shape[0]
    if len(reference_ids) != n_q or (candidates is not None and len(candidates) != n_q):
        raise ValueError(f"{n_q} query embeddings, {len(reference_ids)} reference ids"
                         + ("" if candidates is None else f", {len(candidates)} candidate lists"))
    return rank_and_top_k(query_emb, gallery_emb, gallery_ids, reference_ids, [()] * n_q, k, chunk, candidates)[1]


def recall_at_k(ranks: torch.Tensor, ks: Iterable[int]) -> dict[int, float]:
    """Fraction of queries whose best correct target ranks in the top K, for each K.

    See docs/papers.md §1.0."""
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


def ranking_pools(
    gallery_ids: Sequence[int],
    reference_ids: Sequence[int],
    targets: Sequence[Iterable[int]],
    candidates: Sequence[Iterable[int] | None] | None = None,
) -> tuple[list[int], list[int]]:
    """``(num_correct, num_ranked)`` per query under :func:`rank_queries`' rules: the
    entries a query is ranked among (the gallery, or its candidates within the gallery, less
    its own reference) and how many of them are correct targets. For :func:`chance_recall`."""
    gallery = {int(g) for g in gallery_ids}
    correct, ranked = [], []
    for i, (ref, tgt) in enumerate(zip(reference_ids, targets)):
        cand = None if candidates is None else candidates[i]
        pool = gallery if cand is None else gallery & {int(c) for c in cand}
        n = len(pool) - (int(ref) in pool)
        m = len({int(t) for t in tgt if int(t) in pool and int(t) != int(ref)})
        correct.append(m)
        ranked.append(n)
    return correct, ranked


def chance_recall(num_correct: Sequence[int], num_ranked: Sequence[int], ks: Iterable[int]) -> dict[int, float]:
    """Expected Recall@K of a uniformly random ranking: the chance level of a table.

    A query with ``m`` correct entries among the ``n`` it is ranked against misses them all
    in a random top K with probability ``C(n - m, K) / C(n, K)`` (0 when ``n - m < K``); its
    chance of a hit is one minus that, and 0 when ``m = 0`` (a query without a correct entry
    never hits). The chance level is the mean over queries; e.g. one correct entry among
    ``n``: ``K / n``.

    Args:
        num_correct, num_ranked: ``[Q]`` counts per query (see :func:`ranking_pools`).
        ks: the K values.

    Returns:
        ``{K: chance}``, fractions in [0, 1].

    Raises:
        ValueError: for lengths that differ, no query, or counts outside
            ``0 <= num_correct <= num_ranked``.
    """
    from math import exp, lgamma

    pairs = list(zip(num_correct, num_ranked))
    if len(pairs) != len(num_correct) or len(pairs) != len(num_ranked):
        raise ValueError(f"{len(num_correct)} correct counts for {len(num_ranked)} ranked counts")
    if not pairs:
        raise ValueError("chance_recall of zero queries is undefined")
    if any(not 0 <= m <= n for m, n in pairs):
        raise ValueError("counts must satisfy 0 <= num_correct <= num_ranked")
    out = {}
    for k in ks:
        total = 0.0
        for m, n in pairs:
            if m == 0:
                continue
            if n - m < k:
                total += 1.0
                continue
            # log C(n - m, k) - log C(n, k)
            miss = exp(lgamma(n - m + 1) - lgamma(n - m - k + 1) - lgamma(n + 1) + lgamma(n - k + 1))
            total += 1.0 - miss
        out[int(k)] = total / len(pairs)
    return out


def format_recalls(recalls: Mapping[int, float]) -> dict[str, float]:
    """``{1: 0.5}`` -> ``{"R@1": 0.5}`` for results and tables."""
    return {f"R@{k}": v for k, v in recalls.items()}
