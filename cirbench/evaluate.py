"""Evaluation: embed each gallery once, rank in chunks, Recall@K overall and per query group.

Queries whose group has its own gallery (``dataset.has_group_galleries()``) are ranked
against that gallery; all others against the shared one. Scores, exclusion of the reference
and tie-breaking follow :mod:`cirbench.metrics`. A query with ``candidates`` (a per-query
candidate list, e.g. CIRR's image set) is ranked among those entries of its gallery only.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Sequence

import numpy as np
import torch

from cirbench.composer import Composer
from cirbench.data.contract import CIRDataset, Query
from cirbench.data.model_inputs import normalize_images
from cirbench.metrics import (
    chance_recall,
    format_recalls,
    rank_and_top_k,
    ranking_pools,
    recall_at_k,
    recall_by_group,
)
from cirbench.progress import progress_bar

if TYPE_CHECKING:
    from cirbench.results import QueryRanks


class NonFiniteEmbeddingError(FloatingPointError):
    """A composer produced NaN or infinite embeddings at evaluation."""


@dataclass
class Evaluation:
    """Recall@K overall and per group, the per-query ranks, and the time it took.

    ``seconds`` is the whole evaluation; of it, ``embed_seconds`` went to the embedding passes
    (``embedded_images`` images: every gallery image and every query's reference) and
    ``rank_seconds`` to :func:`~cirbench.metrics.rank_and_top_k` (the ranks and the top-K ids,
    one pass). ``chance`` is the Recall@K a random ranking would score under the same rules
    (:func:`~cirbench.metrics.chance_recall`).
    ``ranks``, ``top_k`` (each query's ``top_k_width`` best gallery ids, best first, fewer where
    a query is ranked among fewer entries; empty lists when ``top_k_width`` is 0), ``groups``
    and ``references`` are per query, in the dataset's ``queries()`` order
    (:meth:`query_ranks` packs them for the results store).
    """

    overall: dict[str, float]
    groups: dict[str, dict[str, float]]
    ranks: list[int] = field(repr=False)
    num_queries: int = 0
    gallery_size: int = 0
    seconds: float = 0.0
    embed_seconds: float = 0.0
    embedded_images: int = 0
    rank_seconds: float = 0.0
    chance: dict[str, float] = field(default_factory=dict)
    top_k: list[list[int]] = field(default_factory=list, repr=False)
    groups_of_queries: list[str] = field(default_factory=list, repr=False)
    references: list[int] = field(default_factory=list, repr=False)

    def query_ranks(self) -> "QueryRanks":
        """The per-query record kept beside the result (top-K padded with -1 to ``[Q, K]``)."""
        from cirbench.results import QueryRanks

        width = max((len(t) for t in self.top_k), default=0)
        top = np.full((len(self.ranks), width), -1, dtype=np.int64)
        for i, ids in enumerate(self.top_k):
            top[i, : len(ids)] = ids
        return QueryRanks(self.ranks, top, self.groups_of_queries, self.references)

    @property
    def embed_images_per_second(self) -> float:
        """Images through the encoders per second of the embedding passes (0 if untimed)."""
        return self.embedded_images / self.embed_seconds if self.embed_seconds else 0.0

    @property
    def rank_queries_per_second(self) -> float:
        """Queries ranked per second of ranking (0 if untimed)."""
        return self.num_queries / self.rank_seconds if self.rank_seconds else 0.0


def _host_images(images: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``images`` in pinned memory when they go to a CUDA device (the copy in
    :func:`normalize_images` is then asynchronous), else unchanged."""
    return images.pin_memory() if device.type == "cuda" else images


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.inference_mode()
def embed_images(
    composer: Composer, dataset: CIRDataset, ids: Sequence[int], batch_size: int, desc: str = "gallery"
) -> torch.Tensor:
    """``embed_target`` of the images ``ids``, in batches, in eval mode."""
    out = []
    for start in progress_bar(range(0, len(ids), batch_size), desc=desc, unit="batch"):
        batch = [int(i) for i in ids[start : start + batch_size]]
        images = normalize_images(_host_images(dataset.images(batch), torch.device(composer.device)), composer.device,
                                  composer.ctx.protocol)
        out.append(composer.embed_target(images).float())
    emb = torch.cat(out) if out else torch.empty(0, 0)
    if not torch.isfinite(emb).all():
        raise NonFiniteEmbeddingError(f"non-finite gallery embeddings ({desc})")
    return emb


@torch.inference_mode()
def embed_queries(
    composer: Composer, dataset: CIRDataset, queries: Sequence[Query], batch_size: int
) -> torch.Tensor:
    """``compose`` of every query, in batches, in eval mode."""
    out = []
    for start in progress_bar(range(0, len(queries), batch_size), desc="queries", unit="batch"):
        chunk = queries[start : start + batch_size]
        images = normalize_images(_host_images(dataset.images([q.reference for q in chunk]),
                                               torch.device(composer.device)), composer.device,
                                  composer.ctx.protocol)
        out.append(composer.compose(images, [q.text for q in chunk]).float())
    emb = torch.cat(out)
    if not torch.isfinite(emb).all():
        raise NonFiniteEmbeddingError("non-finite query embeddings")
    return emb


def evaluate(
    composer: Composer, dataset: CIRDataset, ks: Sequence[int], batch_size: int = 256, chunk: int = 1024,
    top_k: int | None = None,
) -> Evaluation:
    """Recall@K of ``composer`` on the test queries of ``dataset``; each query's ``top_k``
    best gallery ids too (default: the largest of ``ks``; 0: none), from the same pass over
    the scores as the ranks (both timed in ``rank_seconds``).

    See docs/papers.md §1.0."""
    width = max(ks) if top_k is None else top_k
    start = time.perf_counter()
    was_training = composer.training
    composer.eval()
    try:
        queries = list(dataset.queries())
        if not queries:
            raise ValueError(f"dataset {dataset.name!r} has no test queries")
        device = torch.device(composer.device)
        t = time.perf_counter()
        q_emb = embed_queries(composer, dataset, queries, batch_size)
        _sync(device)
        embed_seconds, embedded, rank_seconds = time.perf_counter() - t, len(queries), 0.0
        ranks = torch.empty(len(queries), dtype=torch.long)
        tops: list[list[int]] = [[] for _ in queries]
        num_correct, num_ranked = [0] * len(queries), [0] * len(queries)
        per_group = dataset.has_group_galleries()
        gallery_keys = sorted({q.group for q in queries}) if per_group else [None]
        gallery_size = 0
        for key in gallery_keys:
            rows = [i for i, q in enumerate(queries) if key is None or q.group == key]
            gallery = np.asarray(dataset.gallery(key), dtype=np.int64)
            gallery_size = max(gallery_size, len(gallery))
            t = time.perf_counter()
            g_emb = embed_images(composer, dataset, gallery, batch_size, desc=f"gallery {key or ''}".strip())
            _sync(device)
            embed_seconds, embedded = embed_seconds + time.perf_counter() - t, embedded + len(gallery)
            t = time.perf_counter()
            # ranks and top-K ids from one pass over the scores
            group_ranks, group_tops = rank_and_top_k(
                q_emb[rows],
                g_emb,
                torch.from_numpy(gallery),
                [queries[i].reference for i in rows],
                [queries[i].targets for i in rows],
                width,
                chunk=chunk,
                candidates=[getattr(queries[i], "candidates", None) for i in rows],
            )
            rank_seconds += time.perf_counter() - t
            ranks[rows] = group_ranks
            for i, ids in zip(rows, group_tops):
                tops[i] = ids
            m, n = ranking_pools(
                gallery.tolist(), [queries[i].reference for i in rows], [queries[i].targets for i in rows],
                [getattr(queries[i], "candidates", None) for i in rows],
            )
            for i, mi, ni in zip(rows, m, n):
                num_correct[i], num_ranked[i] = mi, ni
    finally:
        composer.train(was_training)
    groups = [q.group for q in queries]
    return Evaluation(
        overall=format_recalls(recall_at_k(ranks, ks)),
        groups={g: format_recalls(r) for g, r in recall_by_group(ranks, groups, ks).items()},
        ranks=ranks.tolist(),
        chance=format_recalls(chance_recall(num_correct, num_ranked, ks)),
        num_queries=len(queries),
        gallery_size=gallery_size,
        seconds=time.perf_counter() - start,
        embed_seconds=embed_seconds,
        embedded_images=embedded,
        rank_seconds=rank_seconds,
        top_k=tops,
        groups_of_queries=groups,
        references=[int(q.reference) for q in queries],
    )
