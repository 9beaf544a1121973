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
from typing import Sequence, Union

import numpy as np
import torch

from cirbench.data import validate
from cirbench.data.contract import CIRDataset, DatasetSpec, Query, Triplet
from cirbench.testing.base import fail
from cirbench.testing.context import CheckContext

#: What a dataset check takes: a registered name or a spec.
Subject = Union[str, DatasetSpec]

#: ``sample_triplets`` sizes tried.
SAMPLE_SIZES = (1, 7, 16)


def _galleries(ds: CIRDataset) -> dict[str | None, np.ndarray]:
    """The shared gallery and, with per-group galleries, each group's."""
    return validate.galleries(ds)


def _first(items: Sequence[object], limit: int = 5) -> str:
    shown = ", ".join(repr(x) for x in items[:limit])
    return shown + (f", ... ({len(items) - limit} more)" if len(items) > limit else "")


def _fail_first(problems: Sequence[validate.Problem]) -> None:
    if problems:
        fail(problems[0].message if problems[0].path.endswith("()") else str(problems[0]))


def check_not_empty(dataset: Subject, ctx: CheckContext) -> None:
    """At least one image, one training triplet and one test query; ``queries()`` and
    ``train_triplets()`` hold :class:`~cirbench.Query` and :class:`~cirbench.Triplet` records."""
    ds = ctx.build_dataset(dataset)
    _fail_first(validate.emptiness_problems(ds))
    wrong = [type(t).__name__ for t in ds.train_triplets() if not isinstance(t, Triplet)]
    if wrong:
        fail(f"train_triplets() holds {wrong[0]} objects, expected cirbench.Triplet")
    wrong = [type(q).__name__ for q in ds.queries() if not isinstance(q, Query)]
    if wrong:
        fail(f"queries() holds {wrong[0]} objects, expected cirbench.Query")


def check_image_ids(dataset: Subject, ctx: CheckContext) -> None:
    """Every gallery (the shared one, and each group's when ``has_group_galleries()``) is a
    non-empty 1-D integer array of unique ids in ``[0, num_images)``, no two read from the
    same file (:func:`cirbench.data.validate.gallery_problems`)."""
    _fail_first(validate.gallery_problems(ctx.build_dataset(dataset)))


def check_references_valid(dataset: Subject, ctx: CheckContext) -> None:
    """Every triplet's reference and target and every query's reference and targets are integer
    image ids in ``[0, num_images)`` (:func:`cirbench.data.validate.id_problems`)."""
    _fail_first(validate.id_problems(ctx.build_dataset(dataset)))


def check_query_targets_in_gallery(dataset: Subject, ctx: CheckContext) -> None:
    """Every query has at least one correct target, and all of them lie in the gallery it is
    ranked against (its group's when ``has_group_galleries()``, else the shared one). A query
    with ``candidates`` lists only ids of that gallery, and its targets are among them.
    Stricter than :func:`cirbench.data.validate.validate_dataset`, which refuses a dataset
    only when no query can be answered."""
    ds = ctx.build_dataset(dataset)
    issues = validate.query_issues(ds)
    if issues:
        fail(issues[0].describe(ds))


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
