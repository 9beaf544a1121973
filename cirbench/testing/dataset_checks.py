"""Conformance checks for datasets: the contract of :class:`cirbench.CIRDataset`, executable.

Each check is ``check_x(dataset, ctx)`` with ``dataset`` a registered name or a
:class:`~cirbench.DatasetSpec` and ``ctx`` a :class:`~cirbench.testing.CheckContext`; the
dataset is built once per context under ``ctx.protocol`` into ``ctx.cache_dir``.
:data:`DATASET_CHECKS` lists them in the order they run.

A dataset class may declare ``conformance_expected_failures: dict[str, str]`` (check name ->
reason), e.g. ``{"check_splits_disjoint": "the test queries reuse training images by
design"}``: such a check is reported ``xfailed`` when it fails and ``xpassed`` (a failure)
when it passes.
"""

from __future__ import annotations

import json
import numbers
from typing import Iterable, Sequence, Union

import numpy as np
import torch

from cirbench.data.contract import CIRDataset, DatasetSpec, Query, Triplet
from cirbench.testing.base import fail
from cirbench.testing.context import CheckContext

#: What a dataset check takes: a registered name or a spec.
Subject = Union[str, DatasetSpec]

#: ``sample_triplets`` sizes tried.
SAMPLE_SIZES = (1, 7, 16)


def _is_id(x: object) -> bool:
    return isinstance(x, (numbers.Integral, np.integer)) and not isinstance(x, bool)


def _groups(ds: CIRDataset) -> list[str]:
    return sorted({q.group for q in ds.queries()})


def _galleries(ds: CIRDataset) -> dict[str | None, np.ndarray]:
    """The shared gallery and, with per-group galleries, each group's."""
    out: dict[str | None, np.ndarray] = {None: ds.gallery()}
    if ds.has_group_galleries():
        for g in _groups(ds):
            out[g] = ds.gallery(g)
    return out


def _bad_ids(ids: Iterable[object], n: int) -> list[object]:
    return [i for i in ids if not _is_id(i) or not 0 <= int(i) < n]  # type: ignore[arg-type]


def _first(items: Sequence[object], limit: int = 5) -> str:
    shown = ", ".join(repr(x) for x in items[:limit])
    return shown + (f", ... ({len(items) - limit} more)" if len(items) > limit else "")


def check_not_empty(dataset: Subject, ctx: CheckContext) -> None:
    """At least one image, one training triplet and one test query; ``queries()`` and
    ``train_triplets()`` hold :class:`~cirbench.Query` and :class:`~cirbench.Triplet` records."""
    ds = ctx.build_dataset(dataset)
    n = ds.num_images
    if not _is_id(n) or n < 1:
        fail(f"num_images is {n!r}, expected a positive int")
    triplets, queries = list(ds.train_triplets()), list(ds.queries())
    if not triplets:
        fail("train_triplets() is empty")
    if not queries:
        fail("queries() is empty")
    wrong = [type(t).__name__ for t in triplets if not isinstance(t, Triplet)]
    if wrong:
        fail(f"train_triplets() holds {wrong[0]} objects, expected cirbench.Triplet")
    wrong = [type(q).__name__ for q in queries if not isinstance(q, Query)]
    if wrong:
        fail(f"queries() holds {wrong[0]} objects, expected cirbench.Query")


def check_image_ids(dataset: Subject, ctx: CheckContext) -> None:
    """Every gallery (the shared one, and each group's when ``has_group_galleries()``) is a 1-D
    integer array of unique ids in ``[0, num_images)``."""
    ds = ctx.build_dataset(dataset)
    n = ds.num_images
    for group, gallery in _galleries(ds).items():
        where = "gallery()" if group is None else f"gallery({group!r})"
        arr = np.asarray(gallery)
        if arr.ndim != 1 or not np.issubdtype(arr.dtype, np.integer):
            fail(f"{where} is {arr.dtype} with shape {arr.shape}, expected a 1-D int64 array")
        if arr.size == 0:
            fail(f"{where} is empty")
        bad = arr[(arr < 0) | (arr >= n)]
        if bad.size:
            fail(f"{where} has ids outside [0, {n}): {_first(bad.tolist())}")
        values, counts = np.unique(arr, return_counts=True)
        if (counts > 1).any():
            fail(f"{where} lists ids more than once: {_first(values[counts > 1].tolist())}")


def check_references_valid(dataset: Subject, ctx: CheckContext) -> None:
    """Every triplet's reference and target and every query's reference and targets are integer
    image ids in ``[0, num_images)``."""
    ds = ctx.build_dataset(dataset)
    n = ds.num_images
    for i, t in enumerate(ds.train_triplets()):
        bad = _bad_ids((t.reference, t.target), n)
        if bad:
            fail(f"training triplet {i} ({t}) has invalid image ids {_first(bad)}; valid: ints in [0, {n})")
    for i, q in enumerate(ds.queries()):
        bad = _bad_ids((q.reference, *q.targets), n)
        if bad:
            fail(f"query {i} ({q}) has invalid image ids {_first(bad)}; valid: ints in [0, {n})")


def check_query_targets_in_gallery(dataset: Subject, ctx: CheckContext) -> None:
    """Every query has at least one correct target, and all of them lie in the gallery it is
    ranked against (its group's when ``has_group_galleries()``, else the shared one). A query
    with ``candidates`` lists only ids of that gallery, and its targets are among them."""
    ds = ctx.build_dataset(dataset)
    galleries = {g: set(np.asarray(a).tolist()) for g, a in _galleries(ds).items()}
    per_group = ds.has_group_galleries()
    for i, q in enumerate(ds.queries()):
        if not q.targets:
            fail(f"query {i} ({q.text!r}, reference {q.reference}) has no correct target")
        key = q.group if per_group else None
        missing = [t for t in q.targets if int(t) not in galleries[key]]
        if missing:
            where = f"gallery({q.group!r})" if per_group else "the gallery"
            fail(f"query {i} ({q.text!r}, reference {q.reference}, group {q.group!r}): correct "
                 f"target(s) {_first(missing)} are not in {where}, so the query can never be answered")
        candidates = getattr(q, "candidates", None)
        if candidates is not None:
            outside = [c for c in candidates if int(c) not in galleries[key]]
            if outside:
                fail(f"query {i} ({q.text!r}, reference {q.reference}): candidates {_first(outside)} "
                     "are not in the gallery it is ranked against")
            left_out = [t for t in q.targets if int(t) not in {int(c) for c in candidates}]
            if left_out:
                fail(f"query {i} ({q.text!r}, reference {q.reference}): correct target(s) "
                     f"{_first(left_out)} are not among its candidates, so they can never be hit")


def check_images(dataset: Subject, ctx: CheckContext) -> None:
    """``images(ids)`` returns ``uint8 [len(ids), 3, S, S]`` with S the protocol's
    ``image_size``, for one id and for several (the first, the last, gallery and training
    images)."""
    ds = ctx.build_dataset(dataset)
    n, s = ds.num_images, ctx.protocol.image_size
    gallery = np.asarray(ds.gallery()).tolist()
    triplets = list(ds.train_triplets())
    several = [0, n - 1, *gallery[:2], *(t.reference for t in triplets[:2]), *(t.target for t in triplets[:1])]
    for ids in ([0], [n - 1], several):
        ids = [int(i) for i in ids]
        out = ds.images(ids)
        if not isinstance(out, torch.Tensor):
            fail(f"images({ids}) returned {type(out).__name__}, expected a torch.Tensor")
        if out.dtype != torch.uint8:
            fail(f"images({ids}) has dtype {out.dtype}, expected torch.uint8 (0..255, not normalised)")
        if tuple(out.shape) != (len(ids), 3, s, s):
            fail(f"images({ids}) has shape {tuple(out.shape)}, expected {(len(ids), 3, s, s)}: "
                 "[B, 3, S, S] at the protocol's image_size")


def check_texts(dataset: Subject, ctx: CheckContext) -> None:
    """Every query and triplet text is a non-empty str, and ``train_texts()`` holds every
    triplet text (composers build their vocabulary from it)."""
    ds = ctx.build_dataset(dataset)
    for what, records in (("training triplet", ds.train_triplets()), ("query", ds.queries())):
        for i, r in enumerate(records):
            if not isinstance(r.text, str) or not r.text.strip():
                fail(f"{what} {i} has text {r.text!r}, expected a non-empty str")
    vocab = ds.train_texts()
    if any(not isinstance(t, str) for t in vocab):
        fail("train_texts() must be a list of str")
    missing = sorted({t.text for t in ds.train_triplets()} - set(vocab))
    if missing:
        fail(f"train_texts() lacks texts of training triplets: {_first(missing)}")


def check_splits_disjoint(dataset: Subject, ctx: CheckContext) -> None:
    """No image of a training triplet is a test image (a gallery image, a query reference or a
    query target). A dataset whose splits overlap by design declares this check in its
    ``conformance_expected_failures`` with the reason."""
    ds = ctx.build_dataset(dataset)
    train = {int(i) for t in ds.train_triplets() for i in (t.reference, t.target)}
    test: set[int] = set()
    for gallery in _galleries(ds).values():
        test.update(int(i) for i in np.asarray(gallery).tolist())
    for q in ds.queries():
        test.add(int(q.reference))
        test.update(int(t) for t in q.targets)
    both = sorted(train & test)
    if both:
        fail(f"{len(both)} image(s) are used by training triplets and by the test split "
             f"(gallery or queries): {_first(both)}")


def check_sample_triplets(dataset: Subject, ctx: CheckContext) -> None:
    """``sample_triplets(rng, n)`` returns ``n`` training triplets (drawn from
    ``train_triplets()``), and the same triplets for two generators with the same seed."""
    ds = ctx.build_dataset(dataset)
    known = set(ds.train_triplets())
    for n in SAMPLE_SIZES:
        a = ds.sample_triplets(np.random.default_rng(1234), n)
        if len(a) != n:
            fail(f"sample_triplets(rng, {n}) returned {len(a)} triplets")
        foreign = [t for t in a if not isinstance(t, Triplet) or t not in known]
        if foreign:
            fail(f"sample_triplets(rng, {n}) returned {foreign[0]!r}, which is not one of train_triplets()")
        b = ds.sample_triplets(np.random.default_rng(1234), n)
        if list(a) != list(b):
            fail(f"sample_triplets(rng, {n}) differs for two generators seeded alike: draw every "
                 "random choice from rng")


def check_describe(dataset: Subject, ctx: CheckContext) -> None:
    """``describe()`` returns a JSON-serialisable dict (it is written into every result)."""
    ds = ctx.build_dataset(dataset)
    facts = ds.describe()
    if not isinstance(facts, dict):
        fail(f"describe() returned {type(facts).__name__}, expected a dict")
    try:
        json.dumps(facts)
    except (TypeError, ValueError) as exc:
        fail(f"describe() is not JSON-serialisable: {exc}")


#: Every dataset check, in the order they run.
DATASET_CHECKS = (
    check_not_empty,
    check_image_ids,
    check_references_valid,
    check_query_targets_in_gallery,
    check_images,
    check_texts,
    check_splits_disjoint,
    check_sample_triplets,
    check_describe,
)

__all__ = [c.__name__ for c in DATASET_CHECKS] + ["DATASET_CHECKS", "SAMPLE_SIZES"]
