"""pytest integration: :func:`parametrize_with_checks`, one test per (name, check) pair.

pytest is imported only when these functions run, so ``cirbench`` does not need it at run
time.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterable, Mapping

from cirbench.composer import ComposerSpec
from cirbench.data.contract import DatasetSpec
from cirbench.plugins import Registry
from cirbench.protocol import Protocol
from cirbench.testing.base import Check, CheckFailed
from cirbench.testing.context import CheckContext
from cirbench.testing.run import checks_for, run_check, subject_name

if TYPE_CHECKING:  # pragma: no cover
    import pytest


class BoundCheck:
    """One check bound to its kind and to a :class:`CheckContext` shared by the parametrized
    tests; ``check(name)`` runs it and turns the result into pytest's outcome (return, a
    :class:`~cirbench.testing.CheckFailed` assertion, ``pytest.skip`` or ``pytest.xfail``)."""

    def __init__(self, kind: str, check: Check, context: CheckContext, marked_xfail: bool = False) -> None:
        self.kind = kind
        self.check = check
        self.context = context
        self.marked_xfail = marked_xfail
        self.__name__ = check.__name__
        self.__doc__ = check.__doc__

    def __call__(self, name: str | ComposerSpec | DatasetSpec) -> None:
        # With an xfail mark the mark decides; else the subject's own declarations do.
        result = run_check(self.kind, name, self.check, self.context, honour_declared=not self.marked_xfail)
        if result.status == "passed":
            return
        if result.status in ("skipped", "xfailed"):
            import pytest

            (pytest.skip if result.status == "skipped" else pytest.xfail)(result.message)
        raise CheckFailed(f"{self.kind} {result.name!r} fails {result.check}: {result.message}")

    def __repr__(self) -> str:
        return f"<cirbench {self.kind} check {self.__name__}>"


def parametrize_with_checks(
    composers: Iterable[str | ComposerSpec] = (),
    datasets: Iterable[str | DatasetSpec] = (),
    expected_failures: Mapping[tuple[str, str], str] | None = None,
    *,
    registry: Registry | None = None,
    protocol: Protocol | str | None = None,
    context: CheckContext | None = None,
) -> "pytest.MarkDecorator":
    """A ``pytest.mark.parametrize("name, check", ...)`` over every (composer, composer check)
    and (dataset, dataset check) pair, with readable ids such as ``tirg-check_gradients``::

        from cirbench.testing import parametrize_with_checks

        @parametrize_with_checks(composers=["mymethod"], datasets=["mydata"],
                                 expected_failures={("mydata", "check_splits_disjoint"):
                                                    "queries reuse training images"})
        def test_conformance(name, check):
            check(name)

    ``expected_failures`` maps ``(name, check name)`` to a reason; that test is marked
    ``pytest.mark.xfail(reason=..., strict=True)`` (a pass fails the run). Without a mark, a
    composer's or dataset's own ``conformance_expected_failures`` are honoured. All tests
    share one :class:`CheckContext` (``context``, or one made from ``registry`` and
    ``protocol``), so the registry is loaded and each dataset built once.
    """
    import pytest

    ctx = context or CheckContext(protocol=protocol, registry=registry)
    expected = dict(expected_failures or {})
    subjects = [("composer", c) for c in composers] + [("dataset", d) for d in datasets]
    names = {(kind, subject_name(s)) for kind, s in subjects}
    for key in expected:
        ok = isinstance(key, tuple) and len(key) == 2 and any(
            (kind, key[0]) in names and key[1] in {c.__name__ for c in checks_for(kind)}
            for kind in ("composer", "dataset")
        )
        if not ok:
            raise ValueError(
                f"expected_failures: {key!r} is not a (name, check name) pair of the given "
                "composers and datasets"
            )
    params = []
    for kind, subject in subjects:
        label = subject_name(subject)
        for fn in checks_for(kind):
            reason = expected.get((label, fn.__name__))
            marks = [pytest.mark.xfail(reason=reason, strict=True)] if reason is not None else []
            bound = BoundCheck(kind, fn, ctx, marked_xfail=reason is not None)
            params.append(pytest.param(subject, bound, id=f"{label}-{fn.__name__}", marks=marks))
    return pytest.mark.parametrize("name, check", params)
