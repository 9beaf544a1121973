"""The core's own plugin: it contributes the built-in protocol presets."""

from __future__ import annotations

from cirbench.hookspecs import hookimpl
from cirbench.protocol import BUILTIN_PROTOCOLS, Protocol


@hookimpl
def cirbench_protocols() -> list[Protocol]:
    return list(BUILTIN_PROTOCOLS)
