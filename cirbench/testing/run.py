"""Running checks: one (:func:`run_check`), all of a composer or dataset (:func:`run_checks`),
or all with an exception on failure (:func:`check_composer`, :func:`check_dataset`)."""

from __future__ import annotations

import time
from typing import Callable, Iterable, Mapping, Union

from cirbench.composer import ComposerSpec
from cirbench.data.contract import DatasetSpec
from cirbench.plugins import Registry, UnknownNameError
from cirbench.protocol import Protocol
from cirbench.testing.base import Check, CheckFailed, CheckResult, SkipCheck, describe_exception, preserved_rng_state
from cirbench.testing.composer_checks import COMPOSER_CHECKS
from cirbench.testing.context import CheckContext
from cirbench.testing.dataset_checks import DATASET_CHECKS

#: The kinds of plugin item that have checks.
KINDS = ("composer", "dataset")

#: A composer or dataset: its registered name, or its spec.
Subject = Union[str, ComposerSpec, DatasetSpec]

#: Expected failures: ``{check_name: reason}`` for one subject, or
#: ``{(name, check_name): reason}`` for several (the form :func:`parametrize_with_checks` takes).
ExpectedFailures = Mapping[Union[str, tuple], str]


class ConformanceError(AssertionError):
    """Raised by :func:`check_composer` / :func:`check_dataset` when a check fails; ``results``
    holds every :class:`CheckResult`."""

    def __init__(self, message: str, results: list[CheckResult]) -> None:
        super().__init__(message)
        self.results = results


def checks_for(kind: str) -> tuple[Check, ...]:
    """Every check of ``kind`` (``"composer"`` or ``"dataset"``), in the order they run."""
    if kind == "composer":
        return COMPOSER_CHECKS
    if kind == "dataset":
        return DATASET_CHECKS
    raise ValueError(f"unknown kind {kind!r}; valid kinds: {', '.join(KINDS)}")


def subject_name(subject: Subject) -> str:
    """The name of a composer or dataset given by name or spec."""
    return subject if isinstance(subject, str) else subject.name


def _check_fn(kind: str, check: Check | str) -> Check:
    table = {c.__name__: c for c in checks_for(kind)}
    if callable(check):
        return check
    if check not in table:
        raise ValueError(f"unknown {kind} check {check!r}; valid: {', '.join(table)}")
    return table[check]


def expected_reason(
    expected_failures: ExpectedFailures | None, name: str, check: str
) -> str | None:
    """The reason ``check`` of ``name`` is expected to fail, from a dict keyed by
    ``check`` or by ``(name, check)``; None when it is not."""
    if not expected_failures:
        return None
    reason = expected_failures.get((name, check))
    if reason is None:
        reason = expected_failures.get(check)
    return None if reason is None else str(reason)


def _validate_expected(kind: str, expected_failures: ExpectedFailures | None) -> None:
    """A key naming no check is a typo that would silently expect nothing: refuse it."""
    if not expected_failures:
        return
    mine = {c.__name__ for c in checks_for(kind)}
    every = {c.__name__ for k in KINDS for c in checks_for(k)}
    for key in expected_failures:
        if isinstance(key, tuple) and len(key) == 2 and key[1] in every:
            continue
        if isinstance(key, str) and key in mine:
            continue
        raise ValueError(
            f"expected_failures: {key!r} names no {kind} check (keys are a check name or a "
            f"(name, check name) pair); valid checks: {', '.join(sorted(mine))}"
        )


def run_check(
    kind: str,
    subject: Subject,
    check: Check | str,
    context: CheckContext | None = None,
    expected: str | None = None,
    honour_declared: bool = True,
) -> CheckResult:
    """Run one check and report it. ``expected``: the reason it is expected to fail (then a
    failure is ``xfailed`` and a pass ``xpassed``). With ``honour_declared``, the subject's own
    ``conformance_expected_failures`` count too. Global random states are left as they were.
    Raises :class:`~cirbench.plugins.UnknownNameError` for a name no plugin provides."""
    ctx = context or CheckContext()
    fn = _check_fn(kind, check)
    name = subject_name(subject)
    if isinstance(subject, str):  # an unknown name is the caller's error, not a failed check
        ctx.composer_spec(subject) if kind == "composer" else ctx.dataset_spec(subject)
    t0 = time.perf_counter()
    with preserved_rng_state():
        try:
            fn(subject, ctx)
            status, message = "passed", ""
        except SkipCheck as exc:
            status, message = "skipped", str(exc)
        except CheckFailed as exc:
            status, message = "failed", str(exc)
        except UnknownNameError:
            raise
        except Exception as exc:  # a crash inside the plugin is a failure of the check
            status, message = "failed", describe_exception(exc)
        seconds = time.perf_counter() - t0
        if expected is None and honour_declared:
            expected = ctx.declared_expected_failures(kind, subject).get(fn.__name__)
    if expected is not None:
        if status == "failed":
            status, message = "xfailed", f"expected failure: {expected} ({message})"
        elif status == "passed":
            status, message = "xpassed", (
                f"declared as an expected failure ({expected}) but it passed: remove the declaration"
            )
    return CheckResult(kind, name, fn.__name__, status, message, seconds)


def run_checks(
    kind: str,
    name: Subject,
    registry: Registry | None = None,
    expected_failures: ExpectedFailures | None = None,
    *,
    context: CheckContext | None = None,
    protocol: Protocol | str | None = None,
    checks: Iterable[Check | str] | None = None,
    on_result: Callable[[CheckResult], None] | None = None,
) -> list[CheckResult]:
    """Run every check of ``kind`` (``"composer"`` or ``"dataset"``) on ``name`` (a registered
    name or a spec) and return their results in order; never raises for a failed check.

    Args:
        registry: where ``name`` is looked up (default: :func:`~cirbench.plugins.load_registry`).
        expected_failures: ``{check_name: reason}`` or ``{(name, check_name): reason}``: those
            checks are expected to fail (``xfailed``; a pass is ``xpassed``, a failure). The
            subject's own ``conformance_expected_failures`` count too.
        context: a :class:`CheckContext` to share (its registry and protocol win).
        protocol: the protocol (default: :func:`default_check_protocol`).
        checks: run only these checks (functions or names).
        on_result: called with each result as soon as it is known (progress output).

    Raises :class:`~cirbench.plugins.UnknownNameError` for a name no plugin provides and
    ``ValueError`` for an unknown kind or check name.
    """
    ctx = context or CheckContext(protocol=protocol, registry=registry)
    _validate_expected(kind, expected_failures)
    selected = [_check_fn(kind, c) for c in (checks if checks is not None else checks_for(kind))]
    label = subject_name(name)
    results = []
    for fn in selected:
        reason = expected_reason(expected_failures, label, fn.__name__)
        result = run_check(kind, name, fn, ctx, expected=reason)
        results.append(result)
        if on_result is not None:
            on_result(result)
    return results


def _raise_on_failure(kind: str, name: Subject, results: list[CheckResult]) -> list[CheckResult]:
    failed = [r for r in results if r.failed]
    if failed:
        lines = "\n".join(f"  {r.check}: {r.status}: {r.message}" for r in failed)
        raise ConformanceError(
            f"{kind} {subject_name(name)!r} fails {len(failed)} of {len(results)} conformance "
            f"checks:\n{lines}",
            results,
        )
    return results


def check_composer(
    name: str | ComposerSpec,
    registry: Registry | None = None,
    expected_failures: ExpectedFailures | None = None,
    **kwargs,
) -> list[CheckResult]:
    """Run every composer check on ``name``; raise :class:`ConformanceError` listing the
    failures if any check fails, else return the results. Keywords as :func:`run_checks`."""
    results = run_checks("composer", name, registry, expected_failures, **kwargs)
    return _raise_on_failure("composer", name, results)


def check_dataset(
    name: str | DatasetSpec,
    registry: Registry | None = None,
    expected_failures: ExpectedFailures | None = None,
    **kwargs,
) -> list[CheckResult]:
    """Run every dataset check on ``name``; raise :class:`ConformanceError` listing the
    failures if any check fails, else return the results. Keywords as :func:`run_checks`."""
    results = run_checks("dataset", name, registry, expected_failures, **kwargs)
    return _raise_on_failure("dataset", name, results)
