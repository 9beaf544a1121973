"""Path safety: what a loader reads must lie under the dataset folder (the root).

The one rule for symbolic links, for every loader, ``cirbench data verify`` and the layout
checks: **a link that stays inside the dataset folder is followed; a link that leads out of
it is refused**, with the entry, the link (the path component that is a link) and its target
named, and how to fix it (:data:`LINK_FIX`). The dataset folder itself may be a link (it is
resolved first), so ``--data NAME=/big/disk/NAME`` or a data root whose ``NAME`` is a link
both work.

* :func:`resolve_under` checks an entry an annotation file names (``images/x.jpg``): it
  refuses absolute paths, ``..`` climbing above the root and a link on the way that leads out;
* :func:`find_inside` / :func:`list_inside` search the root with a glob pattern (``*``,
  ``?``, ``[...]``, ``**`` for any number of folders; hidden names are skipped as :mod:`glob`
  does), following links that stay inside (each real folder once under ``**``, so a link
  cycle ends) and never following a link that leads out: :func:`find_inside` returns such
  links, :func:`list_inside` refuses the first with :class:`UnsafePathError`;
* :func:`outside_link` is the test itself: the first component of an entry that is a link
  leading out of the root.
"""

from __future__ import annotations

import fnmatch
import glob
import os
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from cirbench.data.errors import UnsafePathError

#: How to fix a refused link (part of every refusal message).
LINK_FIX = (
    "symbolic links may only lead to places inside the dataset folder: point cirbench at a folder "
    "that holds the files themselves (--data NAME=PATH, $CIRBENCH_DATA_<NAME> or the data root; the "
    "dataset folder itself may be a link), or copy or bind-mount (mount --bind) the linked folder "
    "into the dataset folder"
)


@dataclass(frozen=True)
class OutsideLink:
    """A symbolic link under a dataset root that leads out of it.

    Attributes:
        link: the link's path relative to the root, POSIX (``images``, ``images/red apple``).
        text: what the link says (``os.readlink``), e.g. ``/big/disk/fashioniq/images``.
        target: where it resolves (all links followed), absolute.
    """

    link: str
    text: str
    target: str

    def __str__(self) -> str:
        resolved = "" if self.text == self.target else f" (resolves to {self.target})"
        return f"{self.link} -> {self.text}{resolved}"


def _inside(base: str, path: str) -> bool:
    return path == base or path.startswith(base.rstrip(os.sep) + os.sep)


def _follow(base: str, path: str, rel: str) -> tuple[str | None, OutsideLink | None]:
    """``path`` (the file ``rel`` under the real root ``base``, itself under a real folder)
    with a final link resolved: (real path, None), or (None, the link) when it leads out."""
    if not os.path.islink(path):
        return path, None
    target = os.path.realpath(path)
    if _inside(base, target):
        return target, None
    try:
        text = os.readlink(path)
    except OSError:
        text = target
    return None, OutsideLink(rel, text, target)


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


def outside_link(root: Path | str, rel: str, _folders: dict | None = None) -> OutsideLink | None:
    """The first component of ``rel`` (a clean relative path, see :func:`normalise_entry`)
    under ``root`` that is a symbolic link leading out of ``root``; None when there is none
    (links that stay inside are followed). Touches the disk (one ``lstat`` a component);
    ``_folders`` memoises folder prefixes across calls with the same root."""
    if _folders is None:
        base = os.path.realpath(root)
    else:
        base = _folders.get("") or _folders.setdefault("", os.path.realpath(root))
    parts = rel.split("/")
    cur, start = base, 0
    if _folders is not None:  # the longest folder prefix already resolved
        for k in range(len(parts) - 1, 0, -1):
            hit = _folders.get("/".join(parts[:k]))
            if hit is not None:
                if isinstance(hit, OutsideLink):
                    return hit
                cur, start = hit, k
                break
    for k in range(start, len(parts)):
        prefix = "/".join(parts[: k + 1])
        real, link = _follow(base, os.path.join(cur, parts[k]), prefix)
        if _folders is not None and k < len(parts) - 1:
            _folders[prefix] = link if link is not None else real
        if link is not None:
            return link
        cur = real  # type: ignore[assignment]
    return None


def resolve_under(root: Path | str, entry: str, source: Path | str, _folders: dict | None = None) -> Path:
    """The file ``entry`` names under ``root`` (``<real root>/<clean entry>``), guaranteed to
    lie inside ``root`` after following symbolic links. The file need not exist.

    Raises :class:`UnsafePathError` naming ``entry`` and the annotation file ``source`` for an
    absolute entry, ``..`` above the root, or a symbolic link on the way that leads out of the
    root; for a link the error also names the link, its target and how to fix it
    (``err.link`` is the :class:`OutsideLink`)."""
    rel = normalise_entry(entry, source, root)
    link = outside_link(root, rel, _folders)  # every component that is a link is checked
    if link is not None:
        raise UnsafePathError(entry, source, root, link=link)
    base = _folders[""] if _folders else os.path.realpath(root)
    return Path(base) / rel


def is_inside(root: Path | str, entry: str) -> bool:
    """Whether ``entry`` is a safe relative path under ``root`` (see :func:`resolve_under`)."""
    try:
        resolve_under(root, entry, "<check>")
    except UnsafePathError:
        return False
    return True


@dataclass
class Found:
    """What :func:`find_inside` found: ``paths`` (relative to the root, POSIX, in sorted walk
    order, each once) and ``outside`` (the links leading out of the root that the search met
    and did not follow)."""

    paths: list[str] = field(default_factory=list)
    outside: list[OutsideLink] = field(default_factory=list)


def find_inside(root: Path | str, pattern: str, kind: str = "file") -> Found:
    """The files (``kind="file"``), folders (``"dir"``) or both (``"any"``) under ``root``
    matching the glob ``pattern`` (``/``-separated; ``*``, ``?``, ``[...]`` within a name,
    ``**`` for zero or more folders; names starting with ``.`` only match a part that starts
    with ``.``; ``**`` skips them).

    Symbolic links that stay inside the root are followed (under ``**`` each real folder is
    searched once, so a cycle of links ends); a link that leads out is not followed and is
    listed in :attr:`Found.outside` when the search meets it: a name matching a part of the
    pattern, or a folder that ``**`` would enter. Never raises for a missing root or folder."""
    base = os.path.realpath(root)
    parts = [p for p in pattern.replace("\\", "/").split("/") if p not in ("", ".")]
    matches: dict[str, None] = {}
    outside: dict[str, OutsideLink] = {}
    seen: set[tuple[str, int]] = set()

    def children(real_dir: str, part: str | None) -> list[os.DirEntry]:
        try:
            with os.scandir(real_dir) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError:
            return []
        hidden_ok = part is not None and part.startswith(".")
        return [e for e in entries if (hidden_ok or not e.name.startswith("."))
                and (part is None or fnmatch.fnmatchcase(e.name, part))]

    def classify(path: str, sub: str, entry: os.DirEntry | None = None):
        """(real path, outside link, is a folder, is a file) of ``path``; a directory entry
        from ``scandir`` answers without another system call unless it is a link."""
        if entry is not None and not entry.is_symlink():
            return path, None, entry.is_dir(follow_symlinks=False), entry.is_file(follow_symlinks=False)
        real, link = _follow(base, path, sub)
        if link is not None:
            return None, link, False, False
        return real, None, os.path.isdir(real), os.path.isfile(real)  # type: ignore[arg-type]

    def visit(real_dir: str, rel: str, k: int) -> None:
        if k == len(parts):  # only after a trailing '**': the folder itself
            if rel and kind in ("dir", "any"):
                matches[rel] = None
            return
        part = parts[k]
        last = k == len(parts) - 1
        if part == "**":
            if (real_dir, k) in seen:
                return
            seen.add((real_dir, k))
            visit(real_dir, rel, k + 1)  # '**' matches no folder
            for entry in children(real_dir, None):
                sub = f"{rel}/{entry.name}" if rel else entry.name
                real, link, is_dir, _ = classify(entry.path, sub, entry)
                if link is not None:
                    if os.path.isdir(link.target):  # '**' would search it
                        outside.setdefault(sub, link)
                elif is_dir:
                    visit(real, sub, k)  # type: ignore[arg-type]
                elif last and kind in ("file", "any"):
                    matches[sub] = None
            return
        if glob.has_magic(part):
            found = [(e.name, e.path, e) for e in children(real_dir, part)]
        else:
            path = os.path.join(real_dir, part)
            found = [(part, path, None)] if os.path.lexists(path) else []
        for name, path, entry in found:
            sub = f"{rel}/{name}" if rel else name
            real, link, is_dir, is_file = classify(path, sub, entry)
            if link is not None:
                outside.setdefault(sub, link)
            elif last:
                if (kind == "dir" and is_dir) or (kind == "file" and is_file) or (kind == "any" and (is_dir or is_file)):
                    matches[sub] = None
            elif is_dir:
                visit(real, sub, k + 1)  # type: ignore[arg-type]

    if parts and os.path.isdir(base):
        visit(base, "", 0)
    return Found(list(matches), list(outside.values()))


def list_inside(root: Path | str, pattern: str, kind: str = "file", source: str | None = None) -> list[str]:
    """The paths :func:`find_inside` finds; raises :class:`UnsafePathError` for the first
    link leading out of the root that the search meets (naming it as the entry, ``source``
    -- default: the pattern -- as where it was met, the link and its target)."""
    found = find_inside(root, pattern, kind)
    if found.outside:
        link = found.outside[0]
        raise UnsafePathError(link.link, source or f"the search for {pattern}", root, link=link)
    return found.paths
