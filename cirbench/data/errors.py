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
    root (``..``, an absolute path, or a symbolic link leading out)."""

    def __init__(self, entry: str, source: Path | str, root: Path | str, detail: str = "") -> None:
        self.entry = entry
        self.source = str(source)
        self.root = str(root)
        extra = f" ({detail})" if detail else ""
        super().__init__(
            f"{self.source}: entry {entry!r} resolves outside the dataset root {self.root}{extra}; "
            "refused (annotation files may only name files under the root)"
        )


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
