"""Path safety: manifest entries must name files under the dataset root.

An annotation file lists images by path relative to the dataset root. :func:`resolve_under`
refuses any entry that would leave the root: absolute paths, ``..`` components that climb
above it, and symbolic links (of the entry or of a folder on its way) that lead out.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath

from cirbench.data.errors import UnsafePathError


def normalise_entry(entry: str, source: Path | str, root: Path | str) -> str:
    """``entry`` as a clean POSIX relative path (``a/b.jpg``), without touching the disk.

    Backslashes are treated as separators (Windows-made annotation files). Raises
    :class:`UnsafePathError` for an empty or absolute entry, a drive letter, or ``..``
    climbing above the root.
    """
    if not isinstance(entry, str) or not entry.strip():
        raise UnsafePathError(str(entry), source, root, "empty path")
    text = entry.strip().replace("\\", "/")
    if "\x00" in text:
        raise UnsafePathError(entry, source, root, "NUL character")
    if text.startswith("/") or (len(text) > 1 and text[1] == ":"):
        raise UnsafePathError(entry, source, root, "absolute path")
    parts: list[str] = []
    for part in PurePosixPath(text).parts:
        if part in ("", "."):
            continue
        if part == "..":
            if not parts:
                raise UnsafePathError(entry, source, root, "'..' climbs above the root")
            parts.pop()
            continue
        parts.append(part)
    if not parts:
        raise UnsafePathError(entry, source, root, "names the root itself")
    return "/".join(parts)


def resolve_under(root: Path | str, entry: str, source: Path | str) -> Path:
    """The file ``entry`` names under ``root``, guaranteed to lie inside ``root`` after
    following symbolic links. Raises :class:`UnsafePathError` naming ``entry`` and the
    annotation file ``source`` otherwise. The file need not exist."""
    rel = normalise_entry(entry, source, root)
    base = Path(os.path.realpath(root))
    target = Path(os.path.realpath(base / rel))
    if target != base and base not in target.parents:
        raise UnsafePathError(entry, source, root, f"a symbolic link leads to {target}")
    return base / rel


def is_inside(root: Path | str, entry: str) -> bool:
    """Whether ``entry`` is a safe relative path under ``root`` (see :func:`resolve_under`)."""
    try:
        resolve_under(root, entry, "<check>")
    except UnsafePathError:
        return False
    return True
