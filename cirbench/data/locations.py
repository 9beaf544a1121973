"""Where local datasets live: one data root, per-dataset overrides.

Resolution for a dataset ``NAME`` whose layout's default folder is ``FOLDER`` (first match wins):

1. ``--data NAME=PATH`` on the command line (``DataLocations.overrides``);
2. the environment variable ``CIRBENCH_DATA_<NAME>`` (upper case, ``-`` and ``.`` as ``_``:
   ``CIRBENCH_DATA_FASHION200K``, ``CIRBENCH_DATA_MIT_STATES``);
3. ``<data root>/FOLDER``, the data root being ``--data-root DIR``, else ``$CIRBENCH_DATA``,
   else ``$XDG_DATA_HOME/cirbench``, else ``~/.local/share/cirbench``.

A path given for one dataset points at that dataset's own folder (the one holding its
annotation files), never at the shared root.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping

DATA_ENV = "CIRBENCH_DATA"
"""Environment variable: the data root (each dataset in its own sub-folder)."""

DATA_ENV_PREFIX = "CIRBENCH_DATA_"
"""Prefix of the per-dataset environment variables."""


def default_data_root() -> Path:
    """``$CIRBENCH_DATA``, else ``$XDG_DATA_HOME/cirbench``, else ``~/.local/share/cirbench``."""
    if os.environ.get(DATA_ENV):
        return Path(os.environ[DATA_ENV]).expanduser()
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(base) / "cirbench"


def dataset_env_var(name: str) -> str:
    """The per-dataset override variable of dataset ``name`` (``mit-states`` ->
    ``CIRBENCH_DATA_MIT_STATES``)."""
    return DATA_ENV_PREFIX + re.sub(r"[^A-Za-z0-9]", "_", name).upper()


def parse_overrides(items: Iterable[str] | None) -> dict[str, Path]:
    """``["NAME=PATH", ...]`` (the ``--data`` option) -> ``{NAME: PATH}``; raises
    ``ValueError`` naming the malformed item."""
    out: dict[str, Path] = {}
    for item in items or ():
        name, sep, path = item.partition("=")
        if not sep or not name.strip() or not path.strip():
            raise ValueError(f"--data {item!r}: expected NAME=PATH, e.g. fashion200k=/data/fashion200k")
        out[name.strip()] = Path(path.strip()).expanduser()
    return out


@dataclass(frozen=True)
class DataLocations:
    """Where to look for local datasets (see the module docstring for the resolution order).

    ``root`` None means "from the environment" (:func:`default_data_root`), read when a
    location is resolved, so a :class:`DataLocations` made early follows the environment.
    """

    root: Path | None = None
    overrides: Mapping[str, Path] = field(default_factory=dict)

    @classmethod
    def from_options(cls, root: str | Path | None = None, data: Iterable[str] | None = None) -> "DataLocations":
        """From the CLI options ``--data-root`` and ``--data NAME=PATH``."""
        return cls(Path(root).expanduser() if root else None, parse_overrides(data))

    @property
    def data_root(self) -> Path:
        return self.root if self.root is not None else default_data_root()

    def root_for(self, name: str, folder: str | None = None) -> Path:
        """The folder of dataset ``name`` (``folder`` defaults to ``name``)."""
        if name in self.overrides:
            return Path(self.overrides[name])
        env = os.environ.get(dataset_env_var(name))
        if env:
            return Path(env).expanduser()
        return self.data_root / (folder or name)

    def origin(self, name: str) -> str:
        """Which setting decided :meth:`root_for` (for messages)."""
        if name in self.overrides:
            return f"--data {name}=..."
        if os.environ.get(dataset_env_var(name)):
            return f"${dataset_env_var(name)}"
        if self.root is not None:
            return "--data-root"
        return f"${DATA_ENV}" if os.environ.get(DATA_ENV) else "the default data root"

    def how_to_set(self, name: str) -> str:
        """One line telling the user how to point cirbench at another folder."""
        return (f"(looked there because of {self.origin(name)}; set another place with --data-root DIR "
                f"or ${DATA_ENV} (the dataset in DIR/<folder>), or for this dataset alone "
                f"--data {name}=PATH or ${dataset_env_var(name)})")
