"""Predictions on hidden test splits: the files public evaluation servers and starter kits score.

Some datasets publish a test split without its targets (CIRR's ``test1``, FashionIQ's
``test``): its metrics come from a server or a starter kit's evaluation, which reads a
prediction file. A dataset that has such a split offers it through an optional method,

    ``hidden_split(cache_dir: Path | None) -> HiddenSplit``

kept apart from :meth:`CIRDataset.queries` so that evaluation never sees these queries (they
have no targets). :class:`HiddenSplit` says which queries (:class:`HiddenQuery`), which
galleries, which rankings to compute (:class:`Ranking`: top-K over the gallery, or among each
query's candidates) and how to write and check the files (``write``, supplied by the plugin,
which knows the format). :func:`export_predictions` does the generic part: it embeds the
queries and galleries with a trained composer (as :mod:`cirbench.evaluate` does) and ranks by
:func:`cirbench.metrics.top_k_ids` (the ranking rules of :mod:`cirbench.metrics`: the
reference left out, ties to the earlier gallery entry).

A query with several texts (FashionIQ's two captions under a one-query-per-caption protocol)
is composed once per text; its embedding is the mean of the unit-normalised compositions.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from cirbench.composer import Composer
from cirbench.data.contract import CIRDataset, Query
from cirbench.evaluate import embed_images, embed_queries
from cirbench.metrics import top_k_ids
from cirbench.storage import atomic_write_text


class ExportFormatError(ValueError):
    """A prediction file would not pass the format's checks (names the file and the entry)."""


@dataclass(frozen=True)
class HiddenQuery:
    """One query of a hidden split: ``key`` is what the format calls it (CIRR's ``pairid``,
    the index of a FashionIQ entry); ``texts`` one or more modification texts; ``group`` the
    gallery it is ranked against (a key of :attr:`HiddenSplit.galleries`); ``candidates``
    the ids it is ranked among for a :class:`Ranking` with ``among_candidates``."""

    key: str
    reference: int
    texts: tuple[str, ...]
    group: str = "all"
    candidates: tuple[int, ...] | None = None


@dataclass(frozen=True)
class Ranking:
    """One ranking to compute: the ``k`` best ids of each query, over its group's gallery or
    (``among_candidates``) among its candidates only."""

    name: str
    k: int
    among_candidates: bool = False


@dataclass
class HiddenSplit:
    """A split without public targets, as a dataset plugin describes it.

    ``images``: a dataset whose :meth:`~CIRDataset.images` gives the split's images by id
    (its queries are not used); ``galleries``: group -> gallery ids (int64); ``image_names``:
    id -> the name the format uses; ``write(split, rankings, out_dir)`` writes the files from
    ``{ranking name: [ids per query, in query order]}``, checks them against the format and
    returns their paths (raising :class:`ExportFormatError`).
    """

    dataset: str
    name: str
    images: CIRDataset
    queries: list[HiddenQuery]
    galleries: dict[str, np.ndarray]
    image_names: dict[int, str]
    rankings: tuple[Ranking, ...]
    write: Callable[["HiddenSplit", dict[str, list[list[int]]], Path], list[Path]] = field(repr=False)


def has_hidden_split(dataset: CIRDataset) -> bool:
    """Whether ``dataset`` offers a hidden test split (the optional ``hidden_split`` method)."""
    return callable(getattr(dataset, "hidden_split", None))


@torch.inference_mode()
def embed_hidden_queries(composer: Composer, split: HiddenSplit, batch_size: int) -> torch.Tensor:
    """``[Q, D]`` query embeddings: each text composed with the reference; a query with
    several texts gets the mean of their unit-normalised compositions."""
    flat = [Query(q.reference, t, ()) for q in split.queries for t in q.texts]
    owner = torch.tensor([i for i, q in enumerate(split.queries) for _ in q.texts], dtype=torch.long)
    if any(not q.texts for q in split.queries):
        bad = next(q.key for q in split.queries if not q.texts)
        raise ValueError(f"{split.dataset} {split.name}: query {bad!r} has no text")
    emb = embed_queries(composer, split.images, flat, batch_size)
    if all(len(q.texts) == 1 for q in split.queries):
        return emb
    unit = F.normalize(emb.double(), dim=1)
    out = torch.zeros(len(split.queries), emb.shape[1], dtype=torch.float64, device=emb.device)
    out.index_add_(0, owner.to(emb.device), unit)
    return out.float()


def rank_hidden(composer: Composer, split: HiddenSplit, batch_size: int = 256, chunk: int = 1024
                ) -> dict[str, list[list[int]]]:
    """Every :class:`Ranking` of ``split``: ``{name: [gallery ids per query, best first]}``."""
    was_training = composer.training
    composer.eval()
    try:
        q_emb = embed_hidden_queries(composer, split, batch_size)
        out: dict[str, list[list[int]]] = {r.name: [[] for _ in split.queries] for r in split.rankings}
        for group in sorted({q.group for q in split.queries}):
            if group not in split.galleries:
                raise KeyError(f"{split.dataset} {split.name}: no gallery for group {group!r}")
            rows = [i for i, q in enumerate(split.queries) if q.group == group]
            gallery = np.asarray(split.galleries[group], dtype=np.int64)
            g_emb = embed_images(composer, split.images, gallery, batch_size, desc=f"gallery {group}")
            for r in split.rankings:
                cands = [split.queries[i].candidates for i in rows] if r.among_candidates else None
                if cands is not None and any(c is None for c in cands):
                    raise ValueError(f"{split.dataset} {split.name}: ranking {r.name!r} needs candidates")
                top = top_k_ids(q_emb[rows], g_emb, torch.from_numpy(gallery),
                                [split.queries[i].reference for i in rows], r.k, chunk=chunk, candidates=cands)
                for i, ids in zip(rows, top):
                    out[r.name][i] = ids
    finally:
        composer.train(was_training)
    return out


def export_predictions(composer: Composer, split: HiddenSplit, out_dir: str | os.PathLike,
                       batch_size: int = 256, chunk: int = 1024) -> list[Path]:
    """Rank ``split`` with ``composer`` and write the format's files into ``out_dir``
    (created if needed); returns their paths. Raises :class:`ExportFormatError` when the
    files would not pass the format's checks (nothing is left behind then)."""
    rankings = rank_hidden(composer, split, batch_size, chunk)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    return split.write(split, rankings, out)


def check_ranked_names(file: str, key: str, names: Sequence[str], k: int, allowed: set[str] | frozenset[str]) -> None:
    """The checks every format shares: exactly ``k`` distinct names, each one of ``allowed``.
    Raises :class:`ExportFormatError` naming the file and the query."""
    if len(names) != k:
        raise ExportFormatError(f"{file}: query {key}: {len(names)} predictions, the format needs {k}")
    if len(set(names)) != len(names):
        raise ExportFormatError(f"{file}: query {key}: a prediction is repeated")
    unknown = [n for n in names if n not in allowed]
    if unknown:
        raise ExportFormatError(f"{file}: query {key}: {unknown[0]!r} is not an image of the split")


def write_json_checked(path: Path, obj, max_bytes: int | None = None) -> Path:
    """Write ``obj`` as JSON atomically; raise :class:`ExportFormatError` (writing nothing)
    when it would exceed ``max_bytes``."""
    import json

    text = json.dumps(obj)
    size = len(text.encode("utf-8"))
    if max_bytes is not None and size > max_bytes:
        raise ExportFormatError(f"{path}: {size:,} bytes, over the format's limit of {max_bytes:,}")
    atomic_write_text(path, text)
    return path
