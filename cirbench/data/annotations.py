"""Reading annotation files: one strict reader for text lines, tab-separated rows and JSON.

Every loader reads its annotation files through these functions, so every file is decoded by
the same rules and every error names the file:

* the text must be UTF-8; a byte-order mark is accepted and dropped (UTF-8's ``EF BB BF``,
  and UTF-16 / UTF-32 with their mark: what Windows editors write as "Unicode"); line ends
  ``\\r\\n`` and ``\\r`` read as ``\\n`` (what Windows editors and some mirrors write);
* nothing is replaced or guessed: a byte sequence that is not valid UTF-8 raises
  :class:`~cirbench.data.errors.AnnotationError` naming the file, the line, the column, the
  offset of the byte in the file, the offending bytes in hex and the line around them
  (``labels/dress_test_detect_all.txt:3: not valid UTF-8: byte 0xe9 at column 61 (file
  offset 208) in '...resses/201/201_0.jpeg\\t0.10\\tcaf\\xe9 lace dress'``). Decoding
  with replacement characters would merge two different captions into one label;
* a NUL character is refused too (the sign of a UTF-16 file without its mark, or of a
  binary file), naming the file, line and column;
* JSON: a syntax error names the file, line and column; a string holding an unpaired
  surrogate (an undecodable byte escaped by the tool that wrote the file, ``"\\udce9"``) or a
  NUL is refused naming the file and the JSON path of the string (``[12].captions[1]``);
* a file or folder name a loader reads as a label (MIT-States' ``<adj> <noun>`` folders)
  must be UTF-8 as well (:func:`check_name`).

Paths: ``rel`` is relative to the dataset folder ``root`` and is what messages name.
"""

from __future__ import annotations

import codecs
import json
import os
import re
from pathlib import Path

from cirbench.data.errors import AnnotationError

#: Byte-order marks and the codec of the text after them; UTF-32's before UTF-16's (their
#: little-endian marks share the first two bytes).
_BOMS = (
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF32_LE, "utf-32-le"),
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)
_LINE_BREAK = re.compile(r"\r\n|\r|\n")
_CONTEXT = 30  # characters shown on each side of an offending byte


def _where(text: str) -> tuple[int, int]:
    """(line, column) of the position just after ``text``, both from 1."""
    breaks = list(_LINE_BREAK.finditer(text))
    line_start = breaks[-1].end() if breaks else 0
    return len(breaks) + 1, len(text) - line_start + 1


def _decode(data: bytes, rel: str) -> str:
    codec, skip = "utf-8", 0
    for bom, name in _BOMS:
        if data.startswith(bom):
            codec, skip = name, len(bom)
            break
    body = data[skip:]
    try:
        return body.decode(codec)
    except UnicodeDecodeError as exc:
        before = body[:exc.start].decode(codec)
        line, column = _where(before)
        bad = body[exc.start:exc.end]
        what = "byte" if len(bad) == 1 else "bytes"
        head = before[len(before) - column + 1:]
        head = "..." + head[-_CONTEXT:] if len(head) > _CONTEXT else head
        tail = _LINE_BREAK.split(body[exc.end:].decode(codec, "backslashreplace"), maxsplit=1)[0]
        tail = tail[:_CONTEXT] + "..." if len(tail) > _CONTEXT else tail
        shown = (head + "".join(f"\\x{b:02x}" for b in bad) + tail).replace("\t", "\\t")
        name = {"utf-8": "UTF-8"}.get(codec, codec.upper())
        raise AnnotationError(
            rel, f"not valid {name}: {what} {' '.join(f'0x{b:02x}' for b in bad)} at column {column} "
            f"(file offset {skip + exc.start}) in '{shown}'; nothing is replaced: "
            "fix the file or save it as UTF-8", line) from None


def read_text(root: Path | str, rel: str) -> str:
    """The text of annotation file ``rel`` under ``root``: decoded strictly (module
    docstring), the byte-order mark dropped, line ends as ``\\n``.

    Raises :class:`AnnotationError` naming the file, line, column and bytes for text that is
    not valid UTF-8 (or UTF-16/32 after their mark) or holds a NUL; ``OSError`` (naming the
    file) when it cannot be read."""
    text = _LINE_BREAK.sub("\n", _decode((Path(root) / rel).read_bytes(), rel))
    nul = text.find("\x00")
    if nul >= 0:
        line, column = _where(text[:nul])
        raise AnnotationError(rel, f"a NUL character at column {column}: not a UTF-8 text file (UTF-16 "
                              "without a byte-order mark?)", line)
    return text


def read_lines(root: Path | str, rel: str) -> list[str]:
    """The lines of annotation file ``rel`` (line ``n`` at index ``n - 1``), without their
    line ends; the final line end does not start another line. Errors as :func:`read_text`."""
    text = read_text(root, rel)
    if not text:
        return []
    lines = text.split("\n")
    return lines[:-1] if lines[-1] == "" else lines


def read_tsv(root: Path | str, rel: str) -> list[tuple[int, list[str]]]:
    """``(line number, fields)`` of every non-blank line of tab-separated file ``rel``. A field
    is what lies between two tabs, unquoted and unstripped (the published files quote
    nothing). Errors as :func:`read_text`."""
    return [(n, line.split("\t")) for n, line in enumerate(read_lines(root, rel), 1) if line.strip()]


def check_name(name: str, source: str) -> str:
    """``name``, a file or folder name as :func:`os.listdir` gives it, when its bytes are
    valid UTF-8 (a loader that takes labels from folder names reads them by the rules of
    the annotation files). Raises :class:`AnnotationError` naming ``source`` and the
    offending bytes otherwise (Python decodes such a name with ``surrogateescape``)."""
    bad = [ord(ch) - 0xDC00 for ch in name if "\udc80" <= ch <= "\udcff"]
    if bad:
        shown = os.fsencode(name).decode("utf-8", "backslashreplace")
        hexes = " ".join(f"0x{b:02x}" for b in bad)
        raise AnnotationError(source, f"the name '{shown}' is not valid UTF-8 (byte {hexes}); rename it in UTF-8")
    return name


def json_path(*parts: int | str) -> str:
    """A JSON path for messages: ``json_path(12, "captions", 1)`` -> ``[12].captions[1]``
    (a key that is not an identifier is quoted: ``["a b"]``)."""
    out = ""
    for p in parts:
        if isinstance(p, int):
            out += f"[{p}]"
        elif p.isidentifier():
            out += f".{p}" if out else p
        else:
            out += f"[{json.dumps(p)}]"
    return out or "(top level)"


def _bad_string(s: str) -> str | None:
    if "\x00" in s:
        return "holds a NUL character"
    for ch in s:
        if "\ud800" <= ch <= "\udfff":
            return (f"holds an unpaired surrogate \\u{ord(ch):04x} (an undecodable byte, escaped by the "
                    "tool that wrote the file)")
    return None


def _check_strings(data: object, rel: str) -> None:
    stack: list[tuple[object, tuple[int | str, ...]]] = [(data, ())]
    while stack:
        value, path = stack.pop()
        if isinstance(value, str):
            problem = _bad_string(value)
            if problem:
                raise AnnotationError(rel, f"{json_path(*path)}: the string {value!r} {problem}")
        elif isinstance(value, list):
            stack += [(v, (*path, i)) for i, v in enumerate(value)]
        elif isinstance(value, dict):
            for k, v in value.items():
                problem = _bad_string(k)
                if problem:
                    raise AnnotationError(rel, f"{json_path(*path)}: the key {k!r} {problem}")
                stack.append((v, (*path, k)))


def read_json(root: Path | str, rel: str) -> object:
    """The JSON content of annotation file ``rel`` under ``root``. Raises
    :class:`AnnotationError` naming the file and line (and column) for text that does not
    decode (:func:`read_text`) or is not JSON, and naming the JSON path of a string that
    holds an unpaired surrogate or a NUL."""
    text = read_text(root, rel)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise AnnotationError(rel, f"not valid JSON: {exc.msg} (column {exc.colno})", exc.lineno) from None
    _check_strings(data, rel)
    return data


def read_json_records(root: Path | str, rel: str) -> list[dict]:
    """Annotation file ``rel`` as a JSON list of objects (the form of FashionIQ's, Shoes' and
    CIRR's caption files); anything else raises :class:`AnnotationError` naming the file and
    the JSON path of the first bad entry."""
    data = read_json(root, rel)
    if not isinstance(data, list):
        raise AnnotationError(rel, f"(top level): expected a JSON list of pairs, got {type(data).__name__}")
    for n, item in enumerate(data):
        if not isinstance(item, dict):
            raise AnnotationError(rel, f"{json_path(n)}: expected an object, got {type(item).__name__}")
    return data
