"""Progress bars: tqdm on a terminal, silent in CI logs and pipes.

Bars show when standard error is a terminal and neither ``CI`` nor ``CIRBENCH_NO_PROGRESS``
is set; ``CIRBENCH_PROGRESS=1`` forces them on.
"""

from __future__ import annotations

import os
import sys
from typing import Iterable, TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")


def progress_enabled() -> bool:
    if os.environ.get("CIRBENCH_PROGRESS") == "1":
        return True
    if os.environ.get("CI") or os.environ.get("CIRBENCH_NO_PROGRESS"):
        return False
    return sys.stderr.isatty()


def progress_bar(iterable: Iterable[T], **kwargs) -> Iterable[T]:
    """``tqdm(iterable, **kwargs)``, disabled where :func:`progress_enabled` is False."""
    kwargs.setdefault("leave", False)
    kwargs.setdefault("dynamic_ncols", True)
    return tqdm(iterable, disable=not progress_enabled(), **kwargs)
