"""The results store: one JSON file per (protocol, dataset, composer, seed).

Layout under the results folder::

    <protocol>@<hash>/<dataset>/<composer>/seed<N>.json    the result (written atomically)
    <protocol>@<hash>/<dataset>/<composer>/seed<N>.ckpt    training checkpoint while running
    <protocol>@<hash>/<dataset>/<composer>/seed<N>.model.pt  the trained state_dict, only with
                                                           ``cirbench run --save-model``

A result's ``status`` is ``ok``, ``failed`` (with ``error``) or ``diverged``.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from cirbench.protocol import Protocol
from cirbench.storage import atomic_write_json

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
STATUSES = ("ok", "failed", "diverged")
#: Statuses that are final: a rerun skips them unless forced. Failed runs are retried.
FINAL_STATUSES = ("ok", "diverged")


@dataclass(frozen=True)
class RunKey:
    """The identity of one run."""

    protocol: Protocol
    dataset: str
    composer: str
    seed: int

    def relpath(self) -> Path:
        return Path(self.protocol.label, self.dataset, self.composer, f"seed{self.seed}")

    def __str__(self) -> str:
        return f"{self.composer} on {self.dataset} ({self.protocol.label}, seed {self.seed})"


class ResultsStore:
    """Reads and writes results under one folder."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)

    def path(self, key: RunKey) -> Path:
        return self.root / key.relpath().with_suffix(".json")

    def checkpoint_path(self, key: RunKey) -> Path:
        return self.root / key.relpath().with_suffix(".ckpt")

    def model_path(self, key: RunKey) -> Path:
        """Where ``cirbench run --save-model`` keeps the run's trained ``state_dict``; the
        result records it as ``saved_model`` (relative to the results folder)."""
        return self.root / key.relpath().with_suffix(".model.pt")

    def read(self, key: RunKey) -> dict | None:
        """The stored result of ``key``, or None (also for an unreadable file, with a warning)."""
        return _read(self.path(key))

    def is_done(self, key: RunKey) -> bool:
        result = self.read(key)
        return result is not None and result.get("status") in FINAL_STATUSES

    def write(self, key: RunKey, result: dict) -> Path:
        if result.get("status") not in STATUSES:
            raise ValueError(f"result status must be one of {STATUSES}, got {result.get('status')!r}")
        path = self.path(key)
        atomic_write_json(path, result)
        return path

    def __iter__(self) -> Iterator[dict]:
        """Every readable result under the folder (unreadable files are skipped, with a warning)."""
        if not self.root.exists():
            return
        for path in sorted(self.root.glob("*/*/*/seed*.json")):
            result = _read(path)
            if result is not None:
                yield result


def _read(path: Path) -> dict | None:
    if not path.exists():
        return None
    try:
        result = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        log.warning("ignoring unreadable result file %s: %s", path, exc)
        return None
    missing = [f for f in ("status", "protocol", "dataset", "composer", "seed") if f not in result]
    if not isinstance(result, dict) or missing:
        log.warning("ignoring result file %s: missing fields %s", path, missing)
        return None
    return result
