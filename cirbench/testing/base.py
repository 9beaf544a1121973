"""What a check is and what it reports.

A check is a plain function ``check_something(subject, ctx) -> None`` (``subject`` a composer
or dataset name or spec, ``ctx`` a :class:`cirbench.testing.CheckContext`). It passes by
returning, fails by raising :class:`CheckFailed` with a message that says what is wrong and
how to fix it, and is skipped by raising :class:`SkipCheck` with the reason. Any other
exception is a failure too; its message names the exception and where it was raised.
"""

from __future__ import annotations

import contextlib
import os
import random
import traceback
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np
import torch

#: The statuses of a :class:`CheckResult`. ``xfailed``: failed as declared expected;
#: ``xpassed``: declared expected to fail but passed (counts as a failure, as pytest's
#: ``strict=True``).
STATUSES = ("passed", "failed", "skipped", "xfailed", "xpassed")


class CheckFailed(AssertionError):
    """A conformance check failed; the message says what is wrong."""


class SkipCheck(Exception):
    """A conformance check does not apply here (e.g. no CUDA device); the message says why."""


#: The signature every check has: ``check(subject, ctx)``; returns on success.
Check = Callable[..., None]


@dataclass(frozen=True)
class CheckResult:
    """The outcome of one check on one composer or dataset.

    Fields:
        kind: ``"composer"`` or ``"dataset"``.
        name: the composer's or dataset's name.
        check: the check's name (``check_gradients``, ...).
        status: one of :data:`STATUSES`.
        message: why it failed, why it was skipped, or the expected failure's reason;
            empty when it passed.
        seconds: how long the check ran.
    """

    kind: str
    name: str
    check: str
    status: str
    message: str = ""
    seconds: float = 0.0

    @property
    def failed(self) -> bool:
        """True for ``failed`` and ``xpassed`` (an expected failure that passed)."""
        return self.status in ("failed", "xpassed")

    @property
    def ok(self) -> bool:
        """True unless :attr:`failed`."""
        return not self.failed


def fail(message: str) -> None:
    """Raise :class:`CheckFailed` with ``message``."""
    raise CheckFailed(message)


def describe_exception(exc: BaseException) -> str:
    """``Type: message (at file:line in function)``, pointing at the innermost frame that is
    not inside torch, numpy or the checks themselves (usually the plugin's own code)."""
    frames = traceback.extract_tb(exc.__traceback__)
    skip = (os.path.dirname(torch.__file__), os.path.dirname(np.__file__), os.path.dirname(__file__))
    where = ""
    for frame in reversed(frames):
        if not frame.filename.startswith(skip):
            where = f" (at {frame.filename}:{frame.lineno} in {frame.name})"
            break
    text = str(exc).strip() or "(no message)"
    return f"{type(exc).__name__}: {text}{where}"


@contextlib.contextmanager
def preserved_rng_state() -> Iterator[None]:
    """Restore Python's, NumPy's and torch's global random states afterwards, so that running
    checks (which seed) leaves the caller's randomness as it was."""
    py, np_state, cpu = random.getstate(), np.random.get_state(), torch.get_rng_state()
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    try:
        yield
    finally:
        random.setstate(py)
        np.random.set_state(np_state)
        torch.set_rng_state(cpu)
        if cuda is not None:
            torch.cuda.set_rng_state_all(cuda)
