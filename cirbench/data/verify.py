"""``cirbench data verify``: check a local copy of a dataset file by file.

:func:`verify_dataset` checks, in order: the layout's required files; every image the
annotation files reference (path inside the root, file present, decodable by the rules of
:func:`~cirbench.data.decode.display_rgb`: a progress bar runs over them); the published
counts (:meth:`DataLayout.published_counts`). Each problem is one :class:`Problem` naming
its file (an annotation file that does not read: also its line); nothing is raised for a bad
copy.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from cirbench.data.contract import DatasetSpec
from cirbench.data.decode import decode_image
from cirbench.data.errors import AnnotationError, CorruptImageError, UnsafePathError, UnsupportedImageModeError
from cirbench.data.locations import DataLocations
from cirbench.data.paths import resolve_under
from cirbench.progress import progress_bar


@dataclass(frozen=True)
class Problem:
    """One problem: the file (or pattern) at fault and what is wrong."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


@dataclass(frozen=True)
class CountResult:
    """A published count and what the local copy has."""

    what: str
    found: int | None
    expected: int | None
    source: str = ""

    @property
    def ok(self) -> bool:
        return self.expected is None or self.found == self.expected


@dataclass
class VerifyReport:
    """What ``data verify`` found."""

    name: str
    root: Path
    url: str = ""
    images_listed: int = 0
    images_ok: int = 0
    problems: list[Problem] = field(default_factory=list)
    counts: list[CountResult] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def _check_image(path: Path) -> str | None:
    if not path.is_file():
        return "missing"
    try:
        decode_image(path)
    except UnsupportedImageModeError as exc:
        return f"refused ({exc.detail})"
    except CorruptImageError as exc:
        return f"corrupt ({exc.detail})"
    return None


def verify_dataset(spec: DatasetSpec, data: DataLocations | None = None, workers: int = 4) -> VerifyReport:
    """Verify the local copy of ``spec`` under ``data``; raises ``ValueError`` for an
    embedded dataset (there is nothing to verify)."""
    layout = spec.layout
    if layout is None:
        raise ValueError(f"dataset {spec.name!r} is embedded (generated, not read from a folder): "
                         "nothing to verify")
    root = layout.root(spec.name, data)
    report = VerifyReport(spec.name, root, layout.url)
    missing = layout.problems(root)
    report.problems += [Problem(str(root), p) for p in missing]
    if not root.is_dir():
        return report
    try:
        entries = list(layout.image_entries(root))
    except (AnnotationError, UnsafePathError, OSError, ValueError, KeyError) as exc:
        where = getattr(exc, "source", None) or getattr(exc, "filename", None) or str(root)
        report.problems.append(Problem(str(where), f"cannot read annotations: {exc}"))
        entries = []
    seen: set[str] = set()
    files: list[tuple[Path, str]] = []
    for e in entries:
        try:
            path = resolve_under(root, e.entry, e.source)
        except UnsafePathError as exc:
            report.problems.append(Problem(e.source, str(exc)))
            continue
        if str(path) in seen:
            continue
        seen.add(str(path))
        files.append((path, e.source))
    report.images_listed = len(files)
    with ThreadPoolExecutor(max(1, workers)) as pool:
        results = pool.map(_check_image, [f for f, _ in files])
        for (path, source), err in progress_bar(zip(files, results), total=len(files),
                                                desc=f"verifying {spec.name} images", unit="img"):
            if err is None:
                report.images_ok += 1
            else:
                report.problems.append(Problem(str(path), f"{err} (listed in {source})"))
    for pc in layout.published_counts():
        try:
            found: int | None = int(pc.count(root))
        except (AnnotationError, OSError, ValueError, KeyError) as exc:
            where = getattr(exc, "source", None) or getattr(exc, "filename", None) or str(root)
            report.problems.append(Problem(str(where), f"cannot count {pc.what}: {exc}"))
            found = None
        result = CountResult(pc.what, found, pc.expected, pc.source)
        report.counts.append(result)
        if found is not None and not result.ok:
            src = f" ({pc.source})" if pc.source else ""
            report.problems.append(Problem(str(root), f"{pc.what}: found {found}, published {pc.expected}{src}"))
    return report
