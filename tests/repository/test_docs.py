"""docs/papers.md is the one place the repository cites for the papers' facts.

* No tracked file names the old, external reference document (it was never in the repository).
* Every § that cites docs/papers.md is a numbered part of it (each has an explicit
  ``<a id="sN-M">`` anchor). A § cites docs/papers.md when it follows a mention of
  ``docs/papers.md`` within 300 characters (``docs/papers.md §1.2, evaluation §1.0``), or lies
  in docs/papers.md itself; other § (a book's section, an issue's) are not ours.
* Every dotted name that docs/papers.md gives as implementing an equation or rule exists, is
  defined where the page says, and (functions, classes, methods) names docs/papers.md in its own
  docstring.
"""

from __future__ import annotations

import importlib
import inspect
import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PAPERS = ROOT / "docs" / "papers.md"

#: the old document's name, assembled so that this file does not contain it
OLD_REFERENCE = re.compile("REFERENCE" + r"(?:\.md|\s*§)")
ANCHOR = re.compile(r'<a id="(s\d+(?:-\d+)?)"></a>')
SECTION = re.compile(r"(?<!\w)§(\d+(?:\.\d+)?)(?:\s*[-–]\s*(\d+(?:\.\d+)?))?")
NUMBERED_ITEMS = re.compile(r"§([06])\s+(?:decisions?|items?)\s+(\d+(?:(?:,\s*|,?\s+and\s+)\d+)*)")
WINDOW = 300
DOTTED = re.compile(r"`((?:cirbench|cirbench_[a-z0-9_]+)(?:\.[A-Za-z_][A-Za-z0-9_]*)+)`")
SKIP_SUFFIXES = {".png", ".jpg", ".jpeg", ".npy", ".pt", ".gif", ".ico", ".pdf", ".zip", ".gz"}


def anchor_of(number: str) -> str:
    """``"1.4"`` -> ``"s1-4"``, ``"2"`` -> ``"s2"``."""
    return "s" + number.replace(".", "-")


def cited_anchors(text: str, everywhere: bool = False) -> list[str]:
    """The anchors of docs/papers.md that ``text`` cites: ``§1.4`` -> s1-4; a range
    ``§1.4-1.7`` -> both ends; ``§0 decisions 2 and 3`` -> s0, s0-2, s0-3; ``§6 items 8, 9``
    -> s6, s6-8, s6-9. Only § within :data:`WINDOW` characters after a mention of
    docs/papers.md count, unless ``everywhere``."""

    def ours(pos: int) -> bool:
        return everywhere or "docs/papers.md" in text[max(0, pos - WINDOW):pos]

    out = []
    for m in SECTION.finditer(text):
        if ours(m.start()):
            out.append(anchor_of(m.group(1)))
            if m.group(2):
                out.append(anchor_of(m.group(2)))
    for m in NUMBERED_ITEMS.finditer(text):
        if ours(m.start()):
            out += [f"s{m.group(1)}-{n}" for n in re.findall(r"\d+", m.group(2))]
    return out


def tracked_text_files() -> dict[str, str]:
    """Relative path -> text of every file git tracks (or, without git, every file outside
    hidden and build folders), binary files left out."""
    try:
        names = subprocess.run(
            ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True
        ).stdout.decode().split("\0")
    except (OSError, subprocess.CalledProcessError):
        names = [
            str(p.relative_to(ROOT)) for p in ROOT.rglob("*")
            if p.is_file() and not any(part.startswith(".") or part in ("results", "build")
                                       for part in p.relative_to(ROOT).parts)
        ]
    out = {}
    for name in filter(None, names):
        path = ROOT / name
        if path.suffix.lower() in SKIP_SUFFIXES or not path.is_file():
            continue
        try:
            out[name] = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
    return out


def papers_anchors() -> set[str]:
    return set(ANCHOR.findall(PAPERS.read_text(encoding="utf-8")))


def named_objects() -> list[str]:
    """Every distinct dotted name in a code span of docs/papers.md, in order of appearance."""
    return list(dict.fromkeys(DOTTED.findall(PAPERS.read_text(encoding="utf-8"))))


def resolve(dotted: str):
    """``(module name, object)`` for a dotted name: the longest importable prefix is the
    module, the rest attributes."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        modname = ".".join(parts[:cut])
        try:
            obj = importlib.import_module(modname)
        except ModuleNotFoundError as exc:
            if exc.name and not modname.startswith(exc.name) and exc.name != modname:
                raise  # the module exists but one of its own imports is missing
            continue
        for attr in parts[cut:]:
            obj = getattr(obj, attr)
        return modname, obj
    raise ModuleNotFoundError(dotted)


# --- the parser itself, on hand-made text ----------------------------------------------------


def test_cited_anchors_reads_every_citation_form():
    text = (
        "(docs/papers.md §1.2, evaluation §1.0) docs/papers.md §0 decisions 2 and 3, §1.4; "
        "§6 items 8, 9; §2-3; §1.4-1.7; §0.4: ; §6.10)."
    )
    assert cited_anchors(text) == [
        "s1-2", "s1-0", "s0", "s1-4", "s6", "s2", "s3", "s1-4", "s1-7", "s0-4", "s6-10",
        "s0-2", "s0-3", "s6-8", "s6-9",
    ]
    far = "Higham, Accuracy and Stability, 2nd ed., §3.1; " + "x" * WINDOW + " §2"
    assert cited_anchors(far) == []
    assert cited_anchors(f"docs/papers.md {'x' * (WINDOW - 20)} §2 {'x' * WINDOW} §3") == ["s2"]
    assert cited_anchors(far, everywhere=True) == ["s3-1", "s2"]


def test_old_reference_pattern_matches_what_it_must():
    name = "REFERENCE" + ".md"
    assert OLD_REFERENCE.search(f"see {name} §1.4")
    assert OLD_REFERENCE.search("REFERENCE" + " §0 decision 6")
    assert not OLD_REFERENCE.search("docs/papers.md §1.4")


# --- the repository --------------------------------------------------------------------------


def test_no_tracked_file_names_the_old_reference():
    files = tracked_text_files()
    assert "docs/papers.md" in files and len(files) > 50
    offenders = [
        f"{name}:{text.count(chr(10), 0, m.start()) + 1}"
        for name, text in files.items() for m in OLD_REFERENCE.finditer(text)
    ]
    assert not offenders, "cite docs/papers.md instead, at: " + ", ".join(offenders)


def test_every_heading_of_papers_md_has_its_anchor():
    lines = PAPERS.read_text(encoding="utf-8").splitlines()
    headings = [(i, m.group(1)) for i, line in enumerate(lines)
                if (m := re.match(r"#{2,3} §(\d+(?:\.\d+)?) ", line))]
    assert len(headings) >= 20
    for i, number in headings:
        before = [line for line in lines[:i] if line.strip()][-1]
        assert before == f'<a id="{anchor_of(number)}"></a>', f"heading §{number} (line {i + 1})"
    anchors = papers_anchors()
    for n in range(1, 9):
        assert f"s0-{n}" in anchors, f"decision {n} needs its anchor"
    for n in range(1, 13):
        assert f"s6-{n}" in anchors, f"item {n} of §6 needs its anchor"


def test_every_cited_section_exists_in_papers_md():
    anchors = papers_anchors()
    files = tracked_text_files()
    cited = {name: cited_anchors(text, everywhere=name == "docs/papers.md") for name, text in files.items()}
    assert sum(len(v) for v in cited.values()) > 100  # the code cites the papers everywhere
    missing = [f"{name}: §{a[1:].replace('-', '.')}" for name, found in cited.items()
               for a in found if a not in anchors]
    assert not missing, "cited but not in docs/papers.md: " + ", ".join(missing)


def test_every_named_function_exists_where_papers_md_says():
    names = named_objects()
    assert len(names) > 80
    wrong = []
    for dotted in names:
        try:
            modname, obj = resolve(dotted)
        except (ImportError, AttributeError) as exc:
            wrong.append(f"{dotted}: {type(exc).__name__}: {exc}")
            continue
        if inspect.isclass(obj) or inspect.isfunction(obj):
            where = f"{obj.__module__}.{obj.__qualname__}"
            if where != dotted:
                wrong.append(f"{dotted}: defined as {where}")
    assert not wrong, "\n".join(wrong)


def test_each_named_function_names_papers_md_in_its_docstring():
    lacking = []
    checked = 0
    for dotted in named_objects():
        _, obj = resolve(dotted)
        if inspect.isclass(obj):
            doc = obj.__dict__.get("__doc__")
        elif inspect.isfunction(obj):
            doc = obj.__doc__
        else:
            continue  # modules and constants
        checked += 1
        if "docs/papers.md" not in (doc or ""):
            lacking.append(dotted)
    assert checked > 60
    assert not lacking, "docstrings that do not point back to docs/papers.md: " + ", ".join(lacking)


def test_every_equation_row_names_an_implementation():
    """Each row of the equation tables (TIRG E2.x, ComposeAE E3.x, SAC Eq. N) names at least
    one function in its last cell."""
    rows = [line for line in PAPERS.read_text(encoding="utf-8").splitlines()
            if re.match(r"\| (?:Eqs?\. \d|E\d+\.\d+ )", line)]
    assert len(rows) == 7 + 12 + 14, len(rows)
    for row in rows:
        assert DOTTED.search(row.rstrip().rstrip("|").rsplit("|", 1)[1]), row
