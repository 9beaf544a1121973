"""Errors of datasets read from a local folder; each names the file, folder or entry at fault."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence


class DatasetNotAvailable(FileNotFoundError):
    """A dataset's local copy is missing or incomplete.

    The message says which dataset, where it was looked for, what was expected there (each
    unmet requirement with how many files were found), where the dataset is published, and how
    to point cirbench at another folder.
    """

    def __init__(
        self,
        name: str,
        root: Path | str | None,
        problems: Sequence[str],
        url: str = "",
        how_to_set: str = "",
        expected: Sequence[str] = (),
    ) -> None:
        self.name = name
        self.expected = list(expected)
        self.root = Path(root) if root is not None else None
        self.problems = list(problems)
        self.url = url
        self.how_to_set = how_to_set
        super().__init__(self._message())

    @property
    def reason(self) -> str:
        """One line for tables (``cirbench list``, skipped runs)."""
        return "; ".join(self.problems) or "not found"

    def _message(self) -> str:
        where = f" at {self.root}" if self.root is not None else ""
        lines = [f"dataset {self.name!r} is not available{where}:"]
        lines += [f"  - {p}" for p in self.problems]
        if self.expected:
            lines.append("  expected there: " + "; ".join(self.expected))
        if self.url:
            lines.append(f"  it is published at {self.url}")
        if self.how_to_set:
            lines.append(f"  {self.how_to_set}")
        return "\n".join(lines)

    def __str__(self) -> str:  # FileNotFoundError would format errno/filename
        return self._message()


class UnsafePathError(ValueError):
    """A manifest entry (an image path in an annotation file) resolves outside the dataset
    root (``..``, an absolute path, or a symbolic link leading out).

    Attributes: ``entry``, ``source`` (the annotation file, or where the entry was met),
    ``root``, and ``link`` (a :class:`cirbench.data.paths.OutsideLink`: the path component
    that is a link, what it says and where it resolves; None when no link is at fault).
    """

    def __init__(self, entry: str, source: Path | str, root: Path | str, detail: str = "", link=None) -> None:
        self.entry = entry
        self.source = str(source)
        self.root = str(root)
        self.link = link
        if link is not None:
            from cirbench.data.paths import LINK_FIX

            super().__init__(
                f"{self.source}: entry {entry!r} goes through the symbolic link {link}, which leads out "
                f"of the dataset folder {self.root}; refused ({LINK_FIX})"
            )
            return
        extra = f" ({detail})" if detail else ""
        super().__init__(
            f"{self.source}: entry {entry!r} resolves outside the dataset root {self.root}{extra}; "
            "refused (annotation files may only name files under the root)"
        )


class DatasetValidationError(ValueError):
    """A built dataset that cannot be trained or evaluated: no training triplets, no test
    queries, no query with a target in its gallery, a gallery listing an image twice, ids out
    of range. ``problems`` (each naming its annotation file and entry where there is one) are
    listed one a line; ``name`` and ``root`` (None for an embedded dataset) say which dataset."""

    def __init__(self, name: str, problems: Sequence[object], root: Path | str | None = None) -> None:
        self.name = name
        self.problems = list(problems)
        self.root = None if root is None else Path(root)
        where = f" at {self.root}" if self.root is not None else ""
        lines = [f"dataset {name!r}{where} cannot be used ({len(self.problems)} problem(s)):"]
        lines += [f"  - {p}" for p in self.problems]
        super().__init__("\n".join(lines))


class DatasetValidationWarning(UserWarning):
    """A built dataset that can be used but has a flaw worth saying, e.g. some queries have no
    correct target in their gallery (Recall counts them as misses)."""


class CorruptImageError(OSError):
    """An image file that cannot be decoded; the message names the file."""

    def __init__(self, path: Path | str, detail: str) -> None:
        self.path = str(path)
        self.detail = detail
        super().__init__(f"cannot decode image {self.path}: {detail}")

    def __str__(self) -> str:
        return f"cannot decode image {self.path}: {self.detail}"


class UnsupportedImageModeError(CorruptImageError):
    """An image that decodes but whose mode (or value range) cirbench has no rule to show as
    RGB (:func:`cirbench.data.decode.display_rgb`); the message names the file and the mode."""

    def __init__(self, path: Path | str, mode: str, detail: str) -> None:
        self.mode = mode
        super().__init__(path, f"unsupported image mode {mode!r}: {detail}")


class AnnotationError(ValueError):
    """An annotation file whose content is malformed; the message names the file (and line)."""

    def __init__(self, source: Path | str, detail: str, line: int | None = None) -> None:
        self.source = str(source)
        self.line = line
        where = f"{self.source}:{line}" if line is not None else self.source
        super().__init__(f"{where}: {detail}")
