"""The conformance suite: small, named checks that every composer and dataset plugin passes.

In the spirit of scikit-learn's ``check_estimator``: each check is one function that builds
your composer or dataset the way the benchmark does and tests one part of its contract
(:mod:`cirbench.composer`, :mod:`cirbench.data.contract`); a failure says what is wrong and
how to fix it.

From the command line (a composer or dataset name; ``--all`` for every registered one)::

    cirbench check mymethod

From your own test suite (pytest), one test per check with ids like
``mymethod-check_gradients``::

    from cirbench.testing import parametrize_with_checks

    @parametrize_with_checks(composers=["mymethod"], datasets=["mydata"])
    def test_conformance(name, check):
        check(name)

Or all at once, raising :class:`ConformanceError` listing every failure::

    from cirbench.testing import check_composer, check_dataset, run_checks

    check_composer("mymethod")
    results = run_checks("dataset", "mydata")   # list[CheckResult], never raises on failure

Composer checks build the composer under :func:`default_check_protocol` (``smoke`` with a
32-wide embedding) and feed it a :class:`RandomDataset`; dataset checks build the dataset
under the same protocol into a temporary cache folder. Pass a :class:`CheckContext` (or
``protocol=``) to change either.

When a check legitimately does not hold:

* ``expected_failures={(name, check): reason}`` (or ``{check: reason}`` to
  :func:`run_checks`) marks it an expected failure (pytest: ``xfail(strict=True)``);
* a composer or dataset class may declare ``conformance_expected_failures = {check: reason}``
  itself (the CLI honours it too);
* a composer class may list parameters that the training objective legitimately leaves
  without a gradient in ``conformance_no_gradient = ("head.*",)`` (``fnmatch`` patterns;
  frozen parameters never need listing).

Checks (see :data:`COMPOSER_CHECKS` and :data:`DATASET_CHECKS`; each docstring says what it
asserts): output shapes, embedding size, seeded and eval determinism, batch independence,
loss parts, gradients, inputs not mutated, state-dict round trip, parameter counts,
optimisers, CPU and CUDA; for datasets: not empty, image ids, references, query targets in
the gallery, images, texts, disjoint splits, triplet sampling, describe.
"""

from cirbench.testing.base import STATUSES, CheckFailed, CheckResult, SkipCheck
from cirbench.testing.composer_checks import COMPOSER_CHECKS
from cirbench.testing.context import CheckContext, default_check_protocol
from cirbench.testing.dataset_checks import DATASET_CHECKS
from cirbench.testing.parametrize import BoundCheck, parametrize_with_checks
from cirbench.testing.random_data import RandomDataset
from cirbench.testing.run import (
    KINDS,
    ConformanceError,
    check_composer,
    check_dataset,
    checks_for,
    run_check,
    run_checks,
)

__all__ = [
    "COMPOSER_CHECKS",
    "DATASET_CHECKS",
    "KINDS",
    "STATUSES",
    "BoundCheck",
    "CheckContext",
    "CheckFailed",
    "CheckResult",
    "ConformanceError",
    "RandomDataset",
    "SkipCheck",
    "check_composer",
    "check_dataset",
    "checks_for",
    "default_check_protocol",
    "parametrize_with_checks",
    "run_check",
    "run_checks",
]
