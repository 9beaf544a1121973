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
from cirbench.data.errors import (
    AnnotationError,
    CorruptImageError,
    DatasetNotAvailable,
    DatasetValidationError,
    UnsafePathError,
    UnsupportedImageModeError,
)
from cirbench.data.locations import DataLocations
from cirbench.data.paths import resolve_under
from cirbench.data.validate import Problem, validate_dataset
from cirbench.progress import progress_bar

__all__ = ["CountResult", "Problem", "VerifyReport", "verify_dataset"]


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
    warnings: list[Problem] = field(default_factory=list)
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


def verify_dataset(spec: DatasetSpec, data: DataLocations | None = None, workers: int = 4,
                   protocol=None) -> VerifyReport:
    """Verify the local copy of ``spec`` under ``data``; raises ``ValueError`` for an
    embedded dataset (there is nothing to verify). The dataset is built (nothing decoded)
    under ``protocol`` (default: the ``smoke`` preset; a real dataset's records do not depend
    on it) for the validation checks; their warnings go to :attr:`VerifyReport.warnings`."""
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
    said = {link.link for link in layout.outside_links(root)}  # refused links the layout named

    def already_said(exc: Exception) -> bool:
        link = getattr(exc, "link", None)
        return link is not None and link.link in said

    try:
        entries = list(layout.image_entries(root))
    except (AnnotationError, UnsafePathError, OSError, ValueError, KeyError) as exc:
        if not already_said(exc):
            where = getattr(exc, "source", None) or getattr(exc, "filename", None) or str(root)
            report.problems.append(Problem(str(where), f"cannot read annotations: {exc}"))
        entries = []
    seen: set[str] = set()
    files: list[tuple[Path, str]] = []
    through_link: dict[str, list[UnsafePathError]] = {}  # one problem per link, not per entry
    folders: dict = {}
    for e in entries:
        try:
            path = resolve_under(root, e.entry, e.source, folders)
        except UnsafePathError as exc:
            if exc.link is None:
                report.problems.append(Problem(e.source, str(exc)))
            else:
                through_link.setdefault(exc.link.link, []).append(exc)
            continue
        if str(path) in seen:
            continue
        seen.add(str(path))
        files.append((path, e.source))
    for key, errs in through_link.items():
        if key in said:
            continue
        more = f" (and {len(errs) - 1} more entries through the same link)" if len(errs) > 1 else ""
        report.problems.append(Problem(errs[0].source, f"{errs[0]}{more}"))
    report.images_listed = len(files)
    with ThreadPoolExecutor(max(1, workers)) as pool:
        results = pool.map(_check_image, [f for f, _ in files])
        for (path, source), err in progress_bar(zip(files, results), total=len(files),
                                                desc=f"verifying {spec.name} images", unit="img"):
            if err is None:
                report.images_ok += 1
            else:
                report.problems.append(Problem(str(path), f"{err} (listed in {source})"))
    if not missing and not through_link and entries:
        _validate(spec, data, protocol, report)
    for pc in layout.published_counts():
        try:
            found: int | None = int(pc.count(root))
        except (AnnotationError, OSError, ValueError, KeyError) as exc:
            if not already_said(exc):
                where = getattr(exc, "source", None) or getattr(exc, "filename", None) or str(root)
                report.problems.append(Problem(str(where), f"cannot count {pc.what}: {exc}"))
            found = None
        result = CountResult(pc.what, found, pc.expected, pc.source)
        report.counts.append(result)
        if found is not None and not result.ok:
            src = f" ({pc.source})" if pc.source else ""
            report.problems.append(Problem(str(root), f"{pc.what}: found {found}, published {pc.expected}{src}"))
    return report


def _validate(spec: DatasetSpec, data: DataLocations | None, protocol, report: VerifyReport) -> None:
    """Build the dataset and run the checks of :mod:`cirbench.data.validate` on it."""
    if protocol is None:
        from cirbench.protocol import BUILTIN_PROTOCOLS

        protocol = next(p for p in BUILTIN_PROTOCOLS if p.name == "smoke")
    try:
        ds = spec.create(protocol, None, data, validate=False)
    except DatasetValidationError as exc:  # a loader's own check (e.g. MIT-States' pairs)
        report.problems += [p if isinstance(p, Problem) else Problem(str(report.root), str(p)) for p in exc.problems]
        return
    except (DatasetNotAvailable, AnnotationError, UnsafePathError, OSError, ValueError, KeyError) as exc:
        where = getattr(exc, "source", None) or getattr(exc, "filename", None) or str(report.root)
        report.problems.append(Problem(str(where), f"cannot build the dataset: {exc}"))
        return
    result = validate_dataset(ds, spec.layout)
    report.problems += result.errors
    report.warnings += result.warnings
