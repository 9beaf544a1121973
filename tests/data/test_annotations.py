"""Annotation text is read strictly, every error naming its file, line and column
(cirbench/data/annotations.py), on every loader's files (issue 10, part 3)."""

from __future__ import annotations

import codecs
import json
import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cirbench.cli import main
from cirbench.data import (
    AnnotationError,
    DataLocations,
    json_path,
    read_json,
    read_json_records,
    read_lines,
    read_text,
    read_tsv,
)
from cirbench.data.verify import verify_dataset
from tests.fixtures.protocols import SMOKE
from tests.fixtures.local_data import (
    F200K_TEST,
    F200K_TRAIN,
    SHOES_EVAL,
    css_content,
    f200k_path,
    save_py2_npy,
    write_birds_to_words,
    write_cirr,
    write_css,
    write_fashion200k,
    write_fashioniq,
    write_mit_states,
    write_shoes,
)
from tests.fixtures.data_reading import REGISTRY
from tests.fixtures.data_reading import _quiet  # noqa: F401  (pytest fixtures)


LOCAL = ("fashion200k", "mit-states", "css", "fashioniq", "shoes", "birds-to-words", "cirr")


# --- annotation text: the strict reader ----------------------------------------------------------------------
def test_read_lines_accepts_bom_and_every_line_end(tmp_path):
    # what editors and mirrors write: a UTF-8 BOM, CRLF, lone CR, and no final line end
    (tmp_path / "a.txt").write_bytes(codecs.BOM_UTF8 + b"one\r\ntwo\rthr\xc3\xa9e\n\nfour")
    assert read_lines(tmp_path, "a.txt") == ["one", "two", "thr\u00e9e", "", "four"]
    assert read_text(tmp_path, "a.txt") == "one\ntwo\nthr\u00e9e\n\nfour"
    # Windows "Unicode": UTF-16 with its byte-order mark (little and big endian), and UTF-32
    for codec in ("utf-16", "utf-16-be", "utf-32"):
        bom = {"utf-16-be": codecs.BOM_UTF16_BE}.get(codec, b"")
        (tmp_path / "u.txt").write_bytes(bom + "one\r\nthr\u00e9e\r\n".encode(codec))
        assert read_lines(tmp_path, "u.txt") == ["one", "thr\u00e9e"], codec
    (tmp_path / "empty.txt").write_bytes(b"")
    assert read_lines(tmp_path, "empty.txt") == []


def test_bad_byte_names_file_line_column_offset_and_bytes(tmp_path):
    (tmp_path / "labels").mkdir()
    (tmp_path / "labels" / "x.txt").write_bytes(b"first line\r\np.jpg\t0.5\tcaf\xe9 lace dress\r\n")
    with pytest.raises(AnnotationError) as err:
        read_lines(tmp_path, "labels/x.txt")
    # line 2; 'p.jpg\t0.5\tcaf' is 13 characters, so column 14; offset 12 + 13 = 25
    assert str(err.value) == ("labels/x.txt:2: not valid UTF-8: byte 0xe9 at column 14 (file offset 25) in "
                              "'p.jpg\\t0.5\\tcaf\\xe9 lace dress'; nothing is replaced: fix the file or save it as UTF-8")
    assert err.value.source == "labels/x.txt" and err.value.line == 2


def test_truncated_utf8_sequence_and_nul(tmp_path):
    (tmp_path / "t.txt").write_bytes("ok\nna\u00efve".encode()[:-3])  # cut inside the two bytes of i-diaeresis
    with pytest.raises(AnnotationError, match=r"t.txt:2: not valid UTF-8: byte 0xc3 at column 3 \(file offset 5\)"):
        read_text(tmp_path, "t.txt")
    (tmp_path / "w.txt").write_bytes("ab\ncd".encode("utf-16-le"))  # UTF-16 without its mark
    with pytest.raises(AnnotationError, match=r"w.txt:1: a NUL character at column 2"):
        read_lines(tmp_path, "w.txt")


def test_read_tsv_keeps_fields_as_written(tmp_path):
    (tmp_path / "t.tsv").write_bytes(codecs.BOM_UTF8 + b'h1\th2\r\n\r\n a \t"q"\t\r\n')
    assert read_tsv(tmp_path, "t.tsv") == [(1, ["h1", "h2"]), (3, [" a ", '"q"', ""])]


def test_json_errors_name_line_and_json_path(tmp_path):
    (tmp_path / "a.json").write_text('[\n {"captions": ["ok",\n   "x"\n   "y"]}\n]')
    with pytest.raises(AnnotationError, match=r"^a.json:4: not valid JSON: Expecting ',' delimiter \(column 4\)$"):
        read_json(tmp_path, "a.json")
    # an undecodable byte escaped by the tool that wrote the file (surrogateescape + json.dumps)
    (tmp_path / "b.json").write_text(json.dumps([{"captions": ["ok"]}, {"captions": ["ok", "caf\udce9"]}]))
    with pytest.raises(AnnotationError, match=r"^b.json: \[1\]\.captions\[1\]: the string .* holds an unpaired "
                       r"surrogate \\udce9"):
        read_json(tmp_path, "b.json")
    (tmp_path / "c.json").write_text(json.dumps({"a b": {"k": "x\u0000"}}))
    with pytest.raises(AnnotationError, match=r'^c.json: \["a b"\]\.k: the string .* holds a NUL'):
        read_json(tmp_path, "c.json")
    (tmp_path / "d.json").write_text(json.dumps([{}, 3]))
    with pytest.raises(AnnotationError, match=r"^d.json: \[1\]: expected an object, got int$"):
        read_json_records(tmp_path, "d.json")
    (tmp_path / "e.json").write_bytes(codecs.BOM_UTF8 + json.dumps([{"a": "\u00e9"}]).encode() + b"\r\n")
    assert read_json_records(tmp_path, "e.json") == [{"a": "\u00e9"}]
    assert json_path(12, "captions", 1) == "[12].captions[1]" and json_path() == "(top level)"


@settings(max_examples=150, deadline=None)
@given(st.lists(st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n\x00\ufeff")), max_size=5),
       st.sampled_from(["\n", "\r\n", "\r"]), st.booleans(), st.booleans())
def test_read_lines_round_trip(tmp_path_factory, lines, end, bom, final_end):
    """Property: lines written as UTF-8 with any line end, with or without a BOM and a final
    line end, read back as written."""
    if lines and lines[-1] == "" and not final_end:
        final_end = True  # an empty last line without a line end is no line
    data = end.join(lines) + (end if lines and final_end else "")
    path = tmp_path_factory.mktemp("rt")
    (path / "f.txt").write_bytes((codecs.BOM_UTF8 if bom else b"") + data.encode())
    assert read_lines(path, "f.txt") == lines


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=40))
def test_read_text_is_strict_on_any_bytes(tmp_path_factory, data):
    """Property: any bytes either decode exactly as strict UTF-8 would (line ends made \\n) or
    raise an AnnotationError whose offset points where strict decoding fails."""
    path = tmp_path_factory.mktemp("any")
    data = data.lstrip(b"\xef\xbb\xbf\xff\xfe\x00")  # leave byte-order marks to the other tests
    (path / "f.txt").write_bytes(data)
    try:
        text = read_text(path, "f.txt")
    except AnnotationError as exc:
        msg = str(exc)
        if msg.split(": ", 1)[1].startswith("a NUL character"):
            assert b"\x00" in data
        else:
            offset = int(msg.split("file offset ")[1].split(")")[0])
            data[:offset].decode("utf-8")  # valid up to the offset ...
            with pytest.raises(UnicodeDecodeError) as err:
                data[offset:].decode("utf-8")
            assert err.value.start == 0  # ... and invalid right there
    else:
        assert text == data.decode("utf-8").replace("\r\n", "\n").replace("\r", "\n")


# --- annotation text: the examples ----------------------------------------------------------------------
def _latin1_line(path: Path, line: int, old: str, new: bytes) -> None:
    """Replace ``old`` by the raw bytes ``new`` on line ``line`` (from 1) of ``path``."""
    lines = path.read_bytes().split(b"\n")
    assert old.encode() in lines[line - 1], (old, lines[line - 1])
    lines[line - 1] = lines[line - 1].replace(old.encode(), new)
    path.write_bytes(b"\n".join(lines))


def test_fashion200k_label_with_a_latin1_byte(tmp_path, capsys):
    """The issue's example: two captions that differ only in a latin-1 byte were read with
    replacement characters, merged into one label and inflated Recall. Test products 201 and
    203 ("white lace dress", "white silk dress") become "caf\\xe9 lace dress" and "caf\\xe8 lace
    dress"; both would read as "caf\\ufffd lace dress"."""
    assert b"caf\xe9".decode("utf-8", "replace") == b"caf\xe8".decode("utf-8", "replace")  # the old merge
    root = write_fashion200k(tmp_path / "data" / "fashion200k")
    labels = root / "labels" / "dress_test_detect_all.txt"
    # the test file has two lines per product (views 0, 1): product k of F200K_TEST on lines 2k+1, 2k+2
    assert [c for _, c in F200K_TEST][1] == "white lace dress" and [c for _, c in F200K_TEST][3] == "white silk dress"
    for line, new in ((3, b"caf\xe9"), (4, b"caf\xe9"), (7, b"caf\xe8"), (8, b"caf\xe8")):
        _latin1_line(labels, line, "white", new)
    _latin1_line(labels, 7, "silk", b"lace")
    _latin1_line(labels, 8, "silk", b"lace")
    with pytest.raises(AnnotationError) as err:
        REGISTRY.dataset("fashion200k").create(SMOKE, None, DataLocations(root=tmp_path / "data"))
    # line 3: f200k_path('201', 0) + TAB + '0.10' + TAB + 'caf' -> column len(path) + 1 + 4 + 1 + 3 + 1
    col = len(f200k_path("201", 0)) + 10
    assert str(err.value).startswith(f"labels/dress_test_detect_all.txt:3: not valid UTF-8: byte 0xe9 at column {col} ")
    # data verify reports it, naming the file and line, instead of "no problems"
    assert main(["data", "verify", "fashion200k", "--data-root", str(tmp_path / "data")]) == 1
    out = capsys.readouterr().out
    assert "labels/dress_test_detect_all.txt:3: not valid UTF-8: byte 0xe9" in out and "no problems" not in out
    # saved as UTF-8, the two captions stay two labels: a query for product 201 counts its own two views only
    raw = labels.read_bytes()
    labels.write_bytes(raw.replace(b"caf\xe9", "caf\u00e9".encode()).replace(b"caf\xe8", "caf\u00e8".encode()))
    ds = REGISTRY.dataset("fashion200k").create(SMOKE, None, DataLocations(root=tmp_path / "data"))
    ids = {e: i for i, e in enumerate(ds.index.entries)}
    assert ds.captions[ids[f200k_path("201", 0)]] == "caf\u00e9 lace dress"
    assert ds.captions[ids[f200k_path("203", 0)]] == "caf\u00e8 lace dress"
    # test_queries.txt line 1: 200_0 -> 201_1, so the correct targets are 201's two views (ids 12, 13 of
    # the 10 training + 8 test images), not 203's as well
    assert ds.queries()[0].targets == (ids[f200k_path("201", 0)], ids[f200k_path("201", 1)]) == (12, 13)


def test_shoes_name_list_with_a_bad_byte(tmp_path):
    root = write_shoes(tmp_path / "data" / "shoes")
    _latin1_line(root / "eval_im_names.txt", 2, "pumps", b"pump\xe9")
    with pytest.raises(AnnotationError) as err:
        REGISTRY.dataset("shoes").create(SMOKE, None, DataLocations(root=tmp_path / "data"))
    # line 2 is 'img_womens_pumps_2.jpg'; 'img_womens_pump' is 15 characters: column 16; offset: line 1
    # ('img_womens_pumps_1.jpg\n', 23 bytes) + 15 = 38
    assert str(err.value).startswith("eval_im_names.txt:2: not valid UTF-8: byte 0xe9 at column 16 (file offset 38) "
                                     "in 'img_womens_pump\\xe9_2.jpg'")
    assert SHOES_EVAL[1] == "img_womens_pumps_2.jpg"


def test_fashioniq_caption_file_with_a_bad_byte(tmp_path):
    root = write_fashioniq(tmp_path / "data" / "fashioniq")
    path = root / "captions" / "cap.dress.val.json"
    pairs = json.loads(path.read_text())
    path.write_bytes(json.dumps(pairs, indent=1).encode().replace(b"is blue", b"is bl\xe9u"))
    with pytest.raises(AnnotationError) as err:
        REGISTRY.dataset("fashioniq").create(SMOKE, None, DataLocations(root=tmp_path / "data"))
    # indent=1: line 1 '[', 2 ' {', 3 '  "candidate": "DV0",', 4 '  "target": "DV1",', 5 '  "captions": [',
    # 6 '   "is blue",' -> '   "is bl' is 9 characters: column 10
    assert str(err.value).startswith("captions/cap.dress.val.json:6: not valid UTF-8: byte 0xe9 at column 10 ")


# --- every loader's annotation files: one bad byte each ---------------------------------------------------------
def _first_letter(path: Path) -> None:
    """Replace the first ASCII letter after the first 3 bytes with 0xe9 (a latin-1 e-acute)."""
    data = bytearray(path.read_bytes())
    k = next(i for i in range(3, len(data)) if chr(data[i]).isalpha())
    data[k] = 0xE9
    path.write_bytes(bytes(data))


WRITERS = {"fashion200k": write_fashion200k, "shoes": write_shoes, "fashioniq": write_fashioniq,
           "birds-to-words": write_birds_to_words, "cirr": write_cirr, "mit-states": write_mit_states, "css": write_css}


ANNOTATION_FILES = [  # (dataset, annotation file): every text file a loader reads
    ("fashion200k", "labels/dress_train_detect_all.txt"),
    ("fashion200k", "labels/dress_test_detect_all.txt"),
    ("fashion200k", "test_queries.txt"),
    ("shoes", "relative_captions_shoes.json"),
    ("shoes", "train_im_names.txt"),
    ("shoes", "eval_im_names.txt"),
    ("fashioniq", "captions/cap.shirt.train.json"),
    ("fashioniq", "image_splits/split.toptee.val.json"),  # read by data verify only (the gallery is VAL's)
    ("birds-to-words", "birds-to-words-v1.0.tsv"),
    ("cirr", "cirr/captions/cap.rc2.val.json"),
    ("cirr", "cirr/image_splits/split.rc2.train.json"),
]


@pytest.mark.parametrize("name, rel", ANNOTATION_FILES)
def test_every_annotation_file_is_read_strictly(tmp_path, name, rel):
    root = WRITERS[name](tmp_path / "data" / name)
    _first_letter(root / rel)
    if "image_splits/split." not in rel or name == "cirr":
        with pytest.raises(AnnotationError, match=rf"^{rel}:1: not valid UTF-8: byte 0xe9 at column \d+ "):
            REGISTRY.dataset(name).create(SMOKE, None, DataLocations(root=tmp_path / "data"))
    report = verify_dataset(REGISTRY.dataset(name), DataLocations(root=tmp_path / "data"))
    assert report.problems and all(p.path == rel for p in report.problems if "UTF-8" in p.message)
    assert any(f"{rel}:1: not valid UTF-8: byte 0xe9" in p.message for p in report.problems)


@pytest.mark.parametrize("name", ["fashion200k", "shoes", "birds-to-words", "fashioniq", "cirr"])
def test_text_annotations_with_bom_and_crlf_read_as_written(tmp_path, name):
    """Every text file of a loader saved by a Windows editor (UTF-8 BOM, CRLF) gives the same
    records as the plain file."""
    data = tmp_path / "data"
    root = WRITERS[name](data / name)
    plain = REGISTRY.dataset(name).create(SMOKE, None, DataLocations(root=data))
    for path in sorted(root.rglob("*")):
        if path.suffix in (".txt", ".tsv", ".json"):
            path.write_bytes(codecs.BOM_UTF8 + path.read_bytes().replace(b"\n", b"\r\n"))
    again = REGISTRY.dataset(name).create(SMOKE, None, DataLocations(root=data))
    assert again.index.entries == plain.index.entries
    assert list(again.train_triplets()) == list(plain.train_triplets()) and list(again.queries()) == list(plain.queries())
    assert again.gallery().tolist() == plain.gallery().tolist()


def test_fashion200k_crlf_records_by_hand(tmp_path):
    root = tmp_path / "data" / "fashion200k"
    write_fashion200k(root)
    lines = [f"{f200k_path(pid, v)}\t0.5\t{cap}" for pid, cap in F200K_TRAIN for v in (0, 1)]
    (root / "labels" / "dress_train_detect_all.txt").write_bytes(codecs.BOM_UTF8 + "\r\n".join(lines).encode())
    from cirbench_fashion200k.dataset import read_labels

    got = read_labels(root, "train")
    # line 1 is product 100 view 0; the BOM is not part of the path; line 10 (no final line end) is 104 view 1
    assert got[0] == (f200k_path("100", 0), "red floral dress", "labels/dress_train_detect_all.txt", 1)
    assert got[9] == (f200k_path("104", 1), "green maxi dressdotmark", "labels/dress_train_detect_all.txt", 10)


def test_birds_to_words_header_after_a_bom_is_recognised(tmp_path):
    root = write_birds_to_words(tmp_path / "b2w")
    tsv = root / "birds-to-words-v1.0.tsv"
    tsv.write_bytes(codecs.BOM_UTF8 + tsv.read_bytes())
    from cirbench_birds_to_words.dataset import read_rows

    rows = read_rows(root)
    assert rows[0][2:] == ("train", "animal1 has a longer beak than animal2", 2)  # line 1 was the header


def test_mit_states_folder_name_not_utf8(tmp_path):
    root = write_mit_states(tmp_path / "data" / "mit-states")
    os.rename(os.fsencode(root / "images" / "red apple"), os.fsencode(root / "images") + b"/r\xe9d apple")
    with pytest.raises(AnnotationError, match=r"^images/: the name 'r\\xe9d apple' is not valid UTF-8 \(byte 0xe9\)"):
        REGISTRY.dataset("mit-states").create(SMOKE, None, DataLocations(root=tmp_path / "data"))


def test_css_python2_byte_strings_are_read_losslessly(tmp_path):
    """CSS texts are Python 2 byte strings, read as latin-1 (docs/papers.md §1.1): one character per
    byte, so two texts differing in one non-ASCII byte stay two texts (no replacement)."""
    from cirbench_css.reader import CSS_FILE, read_css_file

    content = css_content()
    content["test"]["mods"][1]["to_str"] = "remove large gray circle caf\xe9"
    content["test"]["mods"][2]["to_str"] = "remove large gray circle caf\xe8"
    save_py2_npy(tmp_path / CSS_FILE, content)
    splits = read_css_file(tmp_path / CSS_FILE)
    texts = [p.text for p in splits["test"].pairs]
    assert texts[-2:] == ["remove large gray circle caf\u00e9", "remove large gray circle caf\u00e8"]
