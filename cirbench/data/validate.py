"""Validation of a built dataset: the checks every dataset passes before training.

:meth:`cirbench.DatasetSpec.create` (which the runner uses) runs :func:`validate_dataset` on
what ``build`` returns, embedded and local datasets alike; ``cirbench data verify`` runs the
same checks. A dataset is refused (:class:`~cirbench.data.errors.DatasetValidationError`,
listing every error) when

* it has no image, no training triplet or no test query;
* a triplet or query names an image id outside ``[0, num_images)``;
* a gallery (the shared one, and each group's when ``has_group_galleries()``) is empty, not
  a 1-D integer array, holds ids outside ``[0, num_images)``, lists an id twice, or lists two
  ids read from the same file;
* **no** query can be answered: none has a correct target in the gallery it is ranked
  against (its group's gallery, within its ``candidates`` when it has some; the reference is
  never counted, the evaluator removes it from its own ranking).

When only **some** queries cannot be answered, the dataset is used and a
:class:`~cirbench.data.errors.DatasetValidationWarning` says how many, with the first few;
Recall@K counts those queries as misses (their rank is ``NO_HIT``).

Each problem names the annotation file and the entry at fault where the dataset knows them
(:meth:`cirbench.CIRDataset.image_origin`: a :class:`~cirbench.data.LocalImageDataset`
gives the entry and the file that listed it), else the method (``queries()``, ``gallery()``).

The per-check functions (:func:`emptiness_problems`, :func:`id_problems`,
:func:`gallery_problems`, :func:`query_issues`) also back the conformance checks of
:mod:`cirbench.testing.dataset_checks`, which are stricter about targets (any target outside
the gallery fails there).
"""

from __future__ import annotations

import numbers
import os
import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Iterable, Sequence

import numpy as np

from cirbench.data.errors import DatasetValidationError, DatasetValidationWarning

if TYPE_CHECKING:
    from cirbench.data.contract import CIRDataset, Query
    from cirbench.data.layout import DataLayout

#: How many examples a problem about many records shows.
EXAMPLES = 5


@dataclass(frozen=True)
class Problem:
    """One problem: the file (annotation file, pattern or method) at fault and what is wrong."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


@dataclass
class Validation:
    """What :func:`validate_dataset` found: ``errors`` (the dataset cannot be used) and
    ``warnings`` (it can, with the flaw said)."""

    errors: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors


def _is_id(x: object) -> bool:
    return isinstance(x, (numbers.Integral, np.integer)) and not isinstance(x, bool)


def _first(items: Sequence[object], limit: int = EXAMPLES) -> str:
    shown = ", ".join(str(x) for x in items[:limit])
    return shown + (f", ... ({len(items) - limit} more)" if len(items) > limit else "")


def _name(ds: "CIRDataset", i: object) -> str:
    """Image ``i`` in words: its entry where the dataset knows it, else the id."""
    if not _is_id(i) or not 0 <= int(i) < ds.num_images:  # type: ignore[arg-type]
        return repr(i)
    name, _ = ds.image_origin(int(i))  # type: ignore[arg-type]
    return name


def _source(ds: "CIRDataset", ids: Iterable[object], default: str) -> str:
    """The annotation file(s) that listed ``ids`` (first seen first), else ``default``."""
    out: dict[str, None] = {}
    for i in ids:
        if _is_id(i) and 0 <= int(i) < ds.num_images:  # type: ignore[arg-type]
            src = ds.image_origin(int(i))[1]  # type: ignore[arg-type]
            if src:
                out[src] = None
    return ", ".join(out) or default


def _where(layout: "DataLayout | None", attr: str, default: str) -> str:
    text = getattr(layout, attr, "") if layout is not None else ""
    return text or default


# --- the checks -------------------------------------------------------------------------------------
def emptiness_problems(ds: "CIRDataset", layout: "DataLayout | None" = None) -> list[Problem]:
    """No image, no training triplet, no test query: each an error. ``layout`` (optional)
    names the annotation files in :attr:`~cirbench.data.DataLayout.train_files` /
    :attr:`~cirbench.data.DataLayout.test_files`."""
    out = []
    n = ds.num_images
    if not _is_id(n) or n < 1:
        out.append(Problem("num_images", f"is {n!r}, expected a positive int"))
    if not list(ds.train_triplets()):
        out.append(Problem(_where(layout, "train_files", "train_triplets()"),
                           "train_triplets() is empty: no training triplet was built, nothing to train on"))
    if not list(ds.queries()):
        out.append(Problem(_where(layout, "test_files", "queries()"),
                           "queries() is empty: no test query was built, nothing to evaluate"))
    return out


def id_problems(ds: "CIRDataset") -> list[Problem]:
    """Triplets and queries whose image ids are not ints in ``[0, num_images)``: one error
    per kind of record, with how many and the first few."""
    n = ds.num_images
    out = []
    for what, records in (("training triplet", ds.train_triplets()), ("query", ds.queries())):
        bad = []
        for i, r in enumerate(records):
            ids = (r.reference, r.target) if what == "training triplet" else (r.reference, *r.targets)
            wrong = [x for x in ids if not _is_id(x) or not 0 <= int(x) < n]  # type: ignore[arg-type]
            if wrong:
                bad.append(f"{what} {i} ({r}) has invalid image ids {_first(wrong)}")
        if bad:
            method = "train_triplets()" if what == "training triplet" else "queries()"
            out.append(Problem(method, f"{len(bad)} {what}(s) name images that do not exist (valid: ints in "
                                       f"[0, {n})): {'; '.join(bad[:EXAMPLES])}"
                                       + (f"; ... ({len(bad) - EXAMPLES} more)" if len(bad) > EXAMPLES else "")))
    return out


def galleries(ds: "CIRDataset") -> dict[str | None, np.ndarray]:
    """The shared gallery (key None) and, with per-group galleries, each query group's."""
    out: dict[str | None, np.ndarray] = {None: np.asarray(ds.gallery())}
    if ds.has_group_galleries():
        for g in sorted({q.group for q in ds.queries()}):
            out[g] = np.asarray(ds.gallery(g))
    return out


def gallery_problems(ds: "CIRDataset") -> list[Problem]:
    """Each gallery: a non-empty 1-D integer array of ids in ``[0, num_images)``, each listed
    once, no two read from the same file (when :meth:`~cirbench.CIRDataset.image_file` says)."""
    n = ds.num_images
    out = []
    for group, arr in galleries(ds).items():
        where = "gallery()" if group is None else f"gallery({group!r})"
        if arr.ndim != 1 or not np.issubdtype(arr.dtype, np.integer):
            out.append(Problem(where, f"is {arr.dtype} with shape {arr.shape}, expected a 1-D int64 array"))
            continue
        if arr.size == 0:
            out.append(Problem(where, "is empty: no image to rank the queries against"))
            continue
        bad = arr[(arr < 0) | (arr >= n)]
        if bad.size:
            out.append(Problem(where, f"has ids outside [0, {n}): {_first(bad.tolist())}"))
            continue
        values, counts = np.unique(arr, return_counts=True)
        twice = values[counts > 1].tolist()
        if twice:
            out.append(Problem(_source(ds, twice, where),
                               f"{where} lists ids more than once: {len(twice)} image(s), "
                               + _first([f"{_name(ds, i)} (id {i}, {int(counts[values == i][0])} times)" for i in twice])))
        by_file: dict[str, int] = {}
        same = []
        for i in arr.tolist():
            f = ds.image_file(int(i))
            if f is None:
                continue
            real = os.path.realpath(f)
            if real in by_file and by_file[real] != i:
                same.append(f"{_name(ds, by_file[real])} and {_name(ds, i)} (ids {by_file[real]}, {i}) are both {real}")
            by_file.setdefault(real, int(i))
        if same:
            out.append(Problem(where, f"{len(same)} pair(s) of gallery entries are the same file, so a query "
                                      f"could hit either copy: {_first(same)}"))
    return out


@dataclass(frozen=True)
class QueryIssue:
    """What is wrong with query ``index``: correct targets not in the gallery it is ranked
    against (``missing``), candidates outside that gallery (``outside``), targets not among
    its candidates (``not_candidates``), and whether any target can be ranked at all
    (``answerable``: a target in the gallery, among the candidates, not the reference)."""

    index: int
    query: "Query"
    gallery: str
    missing: tuple[int, ...] = ()
    outside: tuple[int, ...] = ()
    not_candidates: tuple[int, ...] = ()
    answerable: bool = True

    def describe(self, ds: "CIRDataset") -> str:
        q = self.query
        head = f"query {self.index} ({q.text!r}, reference {_name(ds, q.reference)}, group {q.group!r})"
        if not q.targets:
            return f"{head} has no correct target"
        parts = []
        if self.missing:
            parts.append(f"correct target(s) {_first([_name(ds, t) for t in self.missing])} are not in "
                         f"{self.gallery}, so {'the query can never be answered' if not self.answerable else 'they can never be hit'}")
        if self.outside:
            parts.append(f"candidates {_first([_name(ds, c) for c in self.outside])} are not in {self.gallery}")
        if self.not_candidates:
            parts.append(f"correct target(s) {_first([_name(ds, t) for t in self.not_candidates])} are not among "
                         "its candidates, so they can never be hit")
        if not parts and not self.answerable:
            parts.append("its only correct target is its reference, which is never ranked")
        return f"{head}: " + "; ".join(parts)


def query_issues(ds: "CIRDataset") -> list[QueryIssue]:
    """Every query with a flaw (see :class:`QueryIssue`), in query order."""
    sets = {g: {int(x) for x in a.tolist()} for g, a in galleries(ds).items()}
    per_group = ds.has_group_galleries()
    out = []
    for i, q in enumerate(ds.queries()):
        key = q.group if per_group else None
        gallery = sets.get(key, set())
        where = f"gallery({q.group!r})" if per_group else "the gallery"
        targets = [int(t) for t in q.targets if _is_id(t)]
        missing = tuple(t for t in targets if t not in gallery)
        candidates = getattr(q, "candidates", None)
        outside: tuple[int, ...] = ()
        not_candidates: tuple[int, ...] = ()
        ranked = gallery
        if candidates is not None:
            cands = {int(c) for c in candidates}
            outside = tuple(c for c in (int(c) for c in candidates) if c not in gallery)
            not_candidates = tuple(t for t in targets if t not in cands)
            ranked = gallery & cands
        answerable = any(t in ranked and t != int(q.reference) for t in targets)
        if missing or outside or not_candidates or not answerable:
            out.append(QueryIssue(i, q, where, missing, outside, not_candidates, answerable))
    return out


def target_problems(ds: "CIRDataset") -> Validation:
    """Queries that can never be answered: an error when that is every query, else a
    warning, each with how many and the first few."""
    issues = [x for x in query_issues(ds) if not x.answerable]
    total = len(ds.queries())
    out = Validation()
    if not issues or total == 0:
        return out
    examples = "; ".join(x.describe(ds) for x in issues[:EXAMPLES])
    more = f"; ... ({len(issues) - EXAMPLES} more)" if len(issues) > EXAMPLES else ""
    where = _source(ds, [x.query.reference for x in issues[:EXAMPLES]], "queries()")
    if len(issues) == total:
        out.errors.append(Problem(where, f"none of the {total} queries has a correct target in the gallery it "
                                         f"is ranked against, nothing can be evaluated: {examples}{more}"))
    else:
        out.warnings.append(Problem(where, f"{len(issues)} of {total} queries have no correct target in the "
                                           f"gallery they are ranked against; Recall@K counts them as misses: "
                                           f"{examples}{more}"))
    return out


def validate_dataset(ds: "CIRDataset", layout: "DataLayout | None" = None) -> Validation:
    """Every check above on ``ds``. Checks that need sound ids run only when the ids are
    sound (an id out of range is reported once, not again by each later check)."""
    result = Validation(errors=emptiness_problems(ds, layout))
    if any(p.path == "num_images" for p in result.errors):
        return result
    result.errors += id_problems(ds)
    result.errors += gallery_problems(ds)
    if not result.errors:
        targets = target_problems(ds)
        result.errors += targets.errors
        result.warnings += targets.warnings
    return result


def check_dataset_or_raise(ds: "CIRDataset", name: str, layout: "DataLayout | None" = None,
                           root: object = None) -> Validation:
    """:func:`validate_dataset`; raises :class:`DatasetValidationError` listing every error,
    and issues each warning as a :class:`DatasetValidationWarning`."""
    result = validate_dataset(ds, layout)
    if result.errors:
        raise DatasetValidationError(name, result.errors, root)  # type: ignore[arg-type]
    for w in result.warnings:
        warnings.warn(DatasetValidationWarning(f"dataset {name!r}: {w}"), stacklevel=3)
    return result
