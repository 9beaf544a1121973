"""The on-disk layout of a dataset read from a local folder: what must be there, what it is
published as, which image files it lists.

A loader describes its dataset's canonical layout with a :class:`DataLayout` (usually a small
subclass): its default folder name, where it is published, the files that must exist
(:class:`Requirement`, glob patterns relative to the dataset folder, each with a minimum
count) and the published counts that ``cirbench data verify`` compares against
(:class:`PublishedCount`). :meth:`DataLayout.check` is cheap (globs only, no decoding): it
decides whether a dataset is *available*; :meth:`DataLayout.image_entries` lists every image
the annotation files reference, for ``data verify``. Patterns are searched by
:func:`cirbench.data.paths.find_inside`: symbolic links inside the dataset folder are followed,
a link leading out of it is a problem naming the link and its target (the rule of
:mod:`cirbench.data.paths`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from cirbench.data.errors import DatasetNotAvailable
from cirbench.data.locations import DataLocations
from cirbench.data.paths import LINK_FIX, Found, OutsideLink, find_inside


@dataclass(frozen=True)
class Requirement:
    """Files (or folders, ``kind="dir"``) matching ``pattern`` under the dataset folder; at
    least ``min_count`` of them. ``pattern`` is a :mod:`glob` pattern (``**`` recurses).
    ``what`` says in words what they are, for messages."""

    pattern: str
    what: str = ""
    min_count: int = 1
    kind: str = "file"

    def search(self, root: Path) -> Found:
        """The matching files (or folders) under ``root`` and the symbolic links leading out
        of ``root`` that the search met (not followed; see :func:`~cirbench.data.paths.find_inside`)."""
        return find_inside(root, self.pattern, self.kind)

    def found(self, root: Path) -> int:
        """How many matching files (or folders) are under ``root`` (through links that stay
        inside it)."""
        return len(self.search(root).paths)

    def describe(self, found: int) -> str:
        what = f" ({self.what})" if self.what else ""
        need = "a folder" if self.kind == "dir" else "a file"
        if self.min_count > 1:
            need = f"at least {self.min_count} {'folders' if self.kind == 'dir' else 'files'}"
        return f"expected {need} matching {self.pattern}{what}, found {found}"


def refusal(pattern: str, link: OutsideLink) -> str:
    """A layout problem: the search for ``pattern`` met ``link``, which leads out of the root."""
    return (f"{link.link}: the symbolic link {link} leads out of the dataset folder (met looking for "
            f"{pattern}); refused: {LINK_FIX}")


@dataclass(frozen=True)
class PublishedCount:
    """A count that ``cirbench data verify`` compares: ``what`` (in words), the published
    value (``expected``; None when the reference gives none: then only reported), where the
    value comes from (``source``, e.g. ``docs/papers.md §1.4``) and how to count it in a local
    copy (``count(root) -> int``)."""

    what: str
    expected: int | None
    count: Callable[[Path], int]
    source: str = ""


@dataclass(frozen=True)
class ImageEntry:
    """One image an annotation file references: the entry as written (a path relative to the
    dataset folder) and the annotation file that names it."""

    entry: str
    source: str


class DataLayout:
    """The canonical on-disk layout of one local dataset. Subclass and set the attributes;
    override :meth:`image_entries` (and :meth:`published_counts`) to read the annotation
    files.

    Attributes:
        folder: the dataset's folder name under the data root (``fashion200k``).
        url: where the dataset is published (shown when it is missing).
        requirements: what must exist for the dataset to count as available.
        image_globs: fallback for :meth:`image_entries`: image files found by these patterns.
        train_files, test_files: the annotation files (in words, e.g.
            ``captions/cap.*.train.json``) the training triplets and the test queries come
            from, named when none is built (:mod:`cirbench.data.validate`).
    """

    folder: str = ""
    train_files: str = ""
    test_files: str = ""
    url: str = ""
    requirements: tuple[Requirement, ...] = ()
    image_globs: tuple[str, ...] = ()

    def __init__(self, **attributes: object) -> None:
        for key, value in attributes.items():
            if not hasattr(type(self), key):
                raise TypeError(f"{type(self).__name__}: unknown attribute {key!r}")
            setattr(self, key, value)

    # --- where --------------------------------------------------------------------------------
    def root(self, name: str, data: DataLocations | None = None) -> Path:
        """The folder of dataset ``name`` under ``data`` (default: from the environment)."""
        return (data or DataLocations()).root_for(name, self.folder or name)

    # --- availability ---------------------------------------------------------------------------
    def problems(self, root: Path) -> list[str]:
        """What is missing under ``root`` and which symbolic links met by the requirements'
        searches lead out of it, refusals first (empty when every requirement is met)."""
        if not root.exists():
            return ["the folder does not exist"]
        if not root.is_dir():
            return [f"{root} is not a folder"]
        out = []
        refused: dict[str, tuple[str, OutsideLink]] = {}
        for req in self.requirements:
            found = req.search(root)
            for link in found.outside:
                refused.setdefault(link.link, (req.pattern, link))
            if len(found.paths) < req.min_count:
                out.append(req.describe(len(found.paths)))
        return [refusal(pattern, link) for pattern, link in refused.values()] + out

    def outside_links(self, root: Path) -> list[OutsideLink]:
        """The symbolic links leading out of ``root`` that the requirements' searches meet
        (each is one of :meth:`problems`)."""
        out: dict[str, OutsideLink] = {}
        for req in self.requirements:
            for link in req.search(root).outside:
                out.setdefault(link.link, link)
        return list(out.values())

    def check(self, name: str, root: Path, data: DataLocations | None = None) -> None:
        """Raise :class:`DatasetNotAvailable` (with what was expected where, and where the
        dataset is published) unless every requirement is met under ``root``."""
        problems = self.problems(root)
        if problems:
            # The full list of what is expected only when the problems do not already name
            # each unmet requirement (no folder at all): one line per problem, never twice.
            itemised = root.is_dir()
            raise DatasetNotAvailable(
                name, root, problems, self.url, (data or DataLocations()).how_to_set(name),
                expected=[] if itemised else self.expected(),
            )

    def expected(self) -> list[str]:
        """The requirements in words, for messages."""
        return [f"{r.pattern}" + (f" ({r.what})" if r.what else "")
                + (f", at least {r.min_count}" if r.min_count > 1 else "") for r in self.requirements]

    # --- verify ---------------------------------------------------------------------------------
    def image_entries(self, root: Path) -> Sequence[ImageEntry]:
        """Every image the dataset's annotation files reference. Default: the files matching
        :attr:`image_globs`. Loaders override this to parse their annotation files (raising
        :class:`~cirbench.data.errors.AnnotationError` for a malformed one)."""
        out: list[ImageEntry] = []
        for pattern in self.image_globs:
            found = find_inside(root, pattern, "file")
            out += [ImageEntry(p, pattern) for p in found.paths]
            out += [ImageEntry(link.link, pattern) for link in found.outside]  # refused by data verify
        return out

    def published_counts(self) -> Sequence[PublishedCount]:
        """Counts ``data verify`` compares with the published ones (default: none)."""
        return ()
