"""What cirbench checks in a dataset (issue 10 §4).

* One rule for symbolic links, on every loader, ``data verify`` and the layout checks: a link
  that stays inside the dataset folder is followed, a link leading out is refused with the
  entry, the link and its target named (:mod:`cirbench.data.paths`).
* Every built dataset is validated before training (:mod:`cirbench.data.validate`, run by
  ``DatasetSpec.create`` and ``data verify``): training triplets, test queries, targets in
  their galleries, unique gallery entries, ids in range.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cirbench.cli import main
from cirbench.data import (
    DataLocations,
    DatasetNotAvailable,
    DatasetSpec,
    DatasetValidationError,
    DatasetValidationWarning,
    Query,
    UnsafePathError,
    find_inside,
    list_inside,
    resolve_under,
    validate_dataset,
)
from cirbench.data.paths import LINK_FIX, outside_link
from cirbench.data.verify import verify_dataset
from cirbench.plugins import load_registry
from cirbench.testing import RandomDataset
from conftest import SMOKE
from local_data_fixtures import (
    isolate_data_env,
    css_content,
    save_py2_npy,
    shoe,
    write_birds_to_words,
    write_cirr,
    write_css,
    write_fashion200k,
    write_fashioniq,
    write_image,
    write_mit_states,
    write_shoes,
)

REGISTRY = load_registry()
PROTOCOL = dataclasses.replace(SMOKE, image_size=16)
CSS_FILE = "css_toy_dataset_novel2_small.dup.npy"

#: dataset -> (fixture writer, folder under the data root, the part linked as a whole: the
#: image folder; css-2d reads only the CSS file, so its file is linked)
LOCAL = {
    "css": (write_css, "css", "images"),
    "css-2d": (write_css, "css", CSS_FILE),
    "fashion200k": (write_fashion200k, "fashion200k", "women"),
    "mit-states": (write_mit_states, "mit-states", "images"),
    "fashioniq": (write_fashioniq, "fashioniq", "images"),
    "fashioniq-joined": (write_fashioniq, "fashioniq", "images"),
    "shoes": (write_shoes, "shoes", "attributedata"),
    "birds-to-words": (write_birds_to_words, "birds-to-words", "images"),
    "cirr": (write_cirr, "cirr", "dev"),
    "cirr-subset": (write_cirr, "cirr", "dev"),
}


@pytest.fixture(autouse=True)
def _quiet(monkeypatch):
    isolate_data_env(monkeypatch)


def write(name: str, data_root: Path) -> Path:
    """The fixture of ``name`` under ``data_root``; returns the dataset folder."""
    writer, folder, _ = LOCAL[name]
    return writer(data_root / folder)


def build(name: str, data_root: Path, validate: bool = True):
    return REGISTRY.dataset(name).create(PROTOCOL, None, DataLocations(root=data_root), validate=validate)


def records(ds) -> tuple:
    """Everything a run reads from a dataset, pixels included."""
    galleries = {g: ds.gallery(g).tolist() for g in sorted({q.group for q in ds.queries()})} \
        if ds.has_group_galleries() else {}
    return (ds.num_images, list(ds.train_triplets()), list(ds.queries()), ds.gallery().tolist(), galleries,
            ds.images(range(ds.num_images)).numpy().tobytes())


def link(path: Path, to: Path, relative: bool) -> None:
    """Move ``path`` to ``to`` and leave a symbolic link to it at ``path``."""
    to.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(path), str(to))
    os.symlink(os.path.relpath(to, path.parent) if relative else to, path)


def loader_class(name: str):
    return REGISTRY.dataset(name).build.__self__


# --- links: the rule, on every loader ----------------------------------------------------------------
@pytest.mark.parametrize("name", list(LOCAL))
def test_a_whole_folder_linked_inside_the_root_resolves(name, tmp_path):
    """``<root>/images -> store/images`` (inside): the same records and pixels as a plain copy."""
    plain = tmp_path / "plain"
    write(name, plain)
    root = write(name, tmp_path / "linked")
    part = LOCAL[name][2]
    link(root / part, root / "store" / part, relative=True)
    assert (root / part).is_symlink()
    assert records(build(name, tmp_path / "linked")) == records(build(name, plain))


@pytest.mark.parametrize("name", list(LOCAL))
def test_a_whole_folder_linked_out_of_the_root_is_refused(name, tmp_path):
    """``<root>/images -> /elsewhere/images``: refused by the layout check (run, list, check,
    verify) and by the loader itself, naming the entry, the link and its target, and the fix."""
    root = write(name, tmp_path / "data")
    part = LOCAL[name][2]
    target = tmp_path / "elsewhere" / part
    link(root / part, target, relative=False)
    real = os.path.realpath(target)
    spec = REGISTRY.dataset(name)
    with pytest.raises(DatasetNotAvailable) as err:
        build(name, tmp_path / "data")
    msg = str(err.value)
    assert f"{part}: the symbolic link {part} -> {target}" in msg and "leads out of the dataset folder" in msg
    assert LINK_FIX in msg and f"--data {name}=PATH" in msg
    avail = spec.availability(DataLocations(root=tmp_path / "data"))
    assert not avail.ok and f"symbolic link {part} -> {target}" in avail.detail
    if name != "css-2d":  # the loader, without the layout check: its images go through the rule
        with pytest.raises(UnsafePathError) as err2:
            loader_class(name)(root, PROTOCOL)
        e = err2.value
        assert e.link.link == part and e.link.text == str(target) and e.link.target == real
        assert e.entry == part or e.entry.startswith(part + "/")
        assert f"entry {e.entry!r} goes through the symbolic link {part} -> {target}" in str(e)
        assert LINK_FIX in str(e)
    report = verify_dataset(spec, DataLocations(root=tmp_path / "data"))
    about = [str(p) for p in report.problems if f"{part} -> {target}" in str(p)]
    assert len(about) == 1, report.problems  # the layout's refusal, not one line per image behind it
    assert LINK_FIX in about[0] and not report.ok


def test_a_linked_shoes_womens_folder_inside_the_root_resolves(tmp_path):
    """Shoes searches ``**/womens_*``: ``attributedata/womens_pumps -> ../store/pumps`` is
    followed (it used to be reported "missing"); out of the root it is refused."""
    write_shoes(tmp_path / "plain" / "shoes")
    root = write_shoes(tmp_path / "linked" / "shoes")
    link(root / "attributedata" / "womens_pumps", root / "store" / "pumps", relative=True)
    assert records(build("shoes", tmp_path / "linked")) == records(build("shoes", tmp_path / "plain"))

    root = write_shoes(tmp_path / "out" / "shoes")
    target = tmp_path / "elsewhere" / "pumps"
    link(root / "attributedata" / "womens_pumps", target, relative=False)
    with pytest.raises(DatasetNotAvailable, match="the symbolic link attributedata/womens_pumps -> "):
        build("shoes", tmp_path / "out")
    with pytest.raises(UnsafePathError) as err:
        loader_class("shoes")(root, PROTOCOL)
    assert err.value.entry == "attributedata/womens_pumps" and err.value.link.target == os.path.realpath(target)
    assert "the search for **/womens_*/**" in str(err.value)


def test_a_linked_mit_states_class_folder(tmp_path):
    """``images/red apple -> ../store/ra`` (inside) resolves; out of the root it is refused
    with the class folder named."""
    write_mit_states(tmp_path / "plain" / "mit-states")
    root = write_mit_states(tmp_path / "linked" / "mit-states")
    link(root / "images" / "red apple", root / "store" / "ra", relative=True)
    assert records(build("mit-states", tmp_path / "linked")) == records(build("mit-states", tmp_path / "plain"))

    root = write_mit_states(tmp_path / "out" / "mit-states")
    target = tmp_path / "elsewhere" / "red apple"
    link(root / "images" / "red apple", target, relative=False)
    with pytest.raises(DatasetNotAvailable, match=f"the symbolic link images/red apple -> {target}"):
        build("mit-states", tmp_path / "out")
    with pytest.raises(UnsafePathError) as err:
        loader_class("mit-states")(root, PROTOCOL)
    assert err.value.entry == "images/red apple" and err.value.source == "images/"


def test_link_cycles_end_and_aliases_are_read_once(tmp_path):
    """A link back up (``womens_clogs/0/up -> ..``) and one to the folder itself
    (``attributedata/here -> .``) end the search; every image is still found once."""
    write_shoes(tmp_path / "plain" / "shoes")
    root = write_shoes(tmp_path / "cyclic" / "shoes")
    os.symlink("..", root / "attributedata" / "womens_clogs" / "0" / "up")
    os.symlink(".", root / "attributedata" / "here")
    assert records(build("shoes", tmp_path / "cyclic")) == records(build("shoes", tmp_path / "plain"))


def test_a_linked_annotation_file_and_a_single_linked_image(tmp_path):
    """Not only folders: a linked annotation file out of the root is refused by the layout
    check, a linked image file by the loader (here FashionIQ's ``images/DT0.jpg``)."""
    root = write_fashioniq(tmp_path / "data" / "fashioniq")
    link(root / "captions" / "cap.dress.train.json", tmp_path / "elsewhere" / "cap.json", relative=False)
    with pytest.raises(DatasetNotAvailable, match="the symbolic link captions/cap.dress.train.json -> "):
        build("fashioniq", tmp_path / "data")
    root = write_fashioniq(tmp_path / "data2" / "fashioniq")
    link(root / "images" / "DT0.jpg", tmp_path / "elsewhere2" / "DT0.jpg", relative=False)
    with pytest.raises(UnsafePathError) as err:
        build("fashioniq", tmp_path / "data2")
    assert err.value.entry == "images/DT0.jpg" and err.value.link.link == "images/DT0.jpg"


def test_the_dataset_folder_itself_may_be_a_link(tmp_path):
    """The fix the refusal suggests: point cirbench at the real folder, or link the dataset
    folder itself (``<data root>/cirr -> /big/disk/cirr``)."""
    write_cirr(tmp_path / "plain" / "cirr")
    write_cirr(tmp_path / "big" / "cirr")
    (tmp_path / "root").mkdir()
    os.symlink(tmp_path / "big" / "cirr", tmp_path / "root" / "cirr")
    assert records(build("cirr", tmp_path / "root")) == records(build("cirr", tmp_path / "plain"))


def test_resolve_under_names_the_link_that_leaves(tmp_path):
    """``a -> b`` stays inside; ``b/c -> ../../outside`` leaves: the entry ``a/c/x.jpg`` is
    refused naming the component ``a/c`` (as the entry spells it), what the link says and
    where it resolves."""
    root = tmp_path / "root"
    (root / "b").mkdir(parents=True)
    (tmp_path / "outside").mkdir()
    os.symlink("b", root / "a")
    os.symlink("../../outside", root / "b" / "c")
    with pytest.raises(UnsafePathError) as err:
        resolve_under(root, "a/c/x.jpg", "labels.txt")
    assert err.value.link.link == "a/c" and err.value.link.text == "../../outside"
    assert err.value.link.target == os.path.realpath(tmp_path / "outside")
    assert (f"labels.txt: entry 'a/c/x.jpg' goes through the symbolic link a/c -> ../../outside (resolves to "
            f"{os.path.realpath(tmp_path / 'outside')}), which leads out of the dataset folder {root}") in str(err.value)
    assert resolve_under(root, "a/y.jpg", "labels.txt") == Path(os.path.realpath(root)) / "a" / "y.jpg"
    memo: dict = {}  # the memo ImageIndex keeps gives the same answers
    assert outside_link(root, "a/c/x.jpg", memo) == outside_link(root, "a/c/z.jpg", memo) == err.value.link
    assert outside_link(root, "a/y.jpg", memo) is None


def test_find_inside_follows_glob(tmp_path):
    """``find_inside`` matches as :mod:`glob` does (``*`` within a name, ``**`` any number of
    folders, hidden names skipped) and reports the outside links it meets."""
    for rel in ("x/a.jpg", "x/y/b.jpg", "x/y/z/c.png", ".hidden/d.jpg", "x/.e.jpg"):
        (tmp_path / "r" / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "r" / rel).write_text("")
    (tmp_path / "out").mkdir()
    os.symlink(tmp_path / "out", tmp_path / "r" / "x" / "gone")
    os.symlink(tmp_path / "out" / "f.jpg", tmp_path / "r" / "x" / "f.jpg")  # a (broken) file link out
    r = tmp_path / "r"
    found = find_inside(r, "**/*.jpg")
    assert found.paths == ["x/a.jpg", "x/y/b.jpg"]
    # hand: '**' enters x/gone (a folder out of the root); '*.jpg' matches the link x/f.jpg
    assert sorted(link.link for link in found.outside) == ["x/f.jpg", "x/gone"]
    assert find_inside(r, "x/*", "dir").paths == ["x/y"]
    assert find_inside(r, "x/y/**", "file").paths == ["x/y/b.jpg", "x/y/z/c.png"]
    assert find_inside(r, "x/.*").paths == ["x/.e.jpg"]
    assert find_inside(r, "x/y").outside == [] and find_inside(tmp_path / "nowhere", "**").paths == []
    with pytest.raises(UnsafePathError, match="the search for x/\\*: entry 'x/f.jpg'"):
        list_inside(r, "x/*")


_node = st.tuples(st.sampled_from(["d", "f", "in", "out"]), st.integers(0, 5))


@settings(max_examples=60, deadline=None)
@given(nodes=st.lists(_node, min_size=1, max_size=12))
def test_searches_never_leave_the_root(tmp_path_factory, nodes):
    """Property: over random trees of folders, files and links (inside: to an earlier folder;
    out: to a folder outside), every path ``find_inside`` returns resolves inside the root,
    each is reached through no link leading out (:func:`outside_link` finds none), and every
    link it reports is a link that resolves outside."""
    base = tmp_path_factory.mktemp("tree")
    root, outside = base / "root", base / "outside"
    root.mkdir()
    (outside / "deep").mkdir(parents=True)
    (outside / "o.jpg").write_text("")
    folders = [root]
    for k, (kind, pick) in enumerate(nodes):
        parent = folders[pick % len(folders)]
        path = parent / f"n{k}"
        if kind == "d":
            path.mkdir()
            folders.append(path)
        elif kind == "f":
            path.with_suffix(".jpg").write_text("")
        elif kind == "in":
            os.symlink(folders[(pick * 7) % len(folders)], path)
        else:
            os.symlink(outside, path)
    real_root = os.path.realpath(root)
    for pattern in ("**", "**/*.jpg", "*/*", "**/n*/**"):
        found = find_inside(root, pattern, "any")
        for rel in found.paths:
            real = os.path.realpath(root / rel)
            assert real == real_root or real.startswith(real_root + os.sep), (pattern, rel)
            assert outside_link(root, rel) is None
        for link in found.outside:
            assert (root / link.link).is_symlink()
            assert not os.path.realpath(root / link.link).startswith(real_root + os.sep)


# --- validation: the examples of the issue ---------------------------------------------------------------
def mit_states_partial(root: Path) -> Path:
    """MIT-States extracted in part: training nouns apple (only ``red apple``) and pear (only
    ``ripe pear``), so no training noun has two adjectives; the test nouns are complete."""
    write_mit_states(root)
    shutil.rmtree(root / "images" / "green apple")
    shutil.rmtree(root / "images" / "sliced apple")
    write_image(root / "images" / "ripe pear" / "img_0.jpg", 4242)
    return root


# hand: class folders of training nouns with images: "red apple", "ripe pear" (2) for the
# nouns apple and pear (2); "adj apple" is unannotated and "misc" has no space: skipped
MIT_PARTIAL = ("images/: no training noun has two adjectives (images/ has 2 class folder(s) with images for 2 "
               "training noun(s): red apple, ripe pear): cannot build training pairs")


def test_mit_states_extracted_in_part_says_why(tmp_path):
    """It used to fail in training with ``ValueError: high <= 0``."""
    mit_states_partial(tmp_path / "data" / "mit-states")
    with pytest.raises(DatasetValidationError) as err:
        build("mit-states", tmp_path / "data")
    assert MIT_PARTIAL in str(err.value) and "high <= 0" not in str(err.value)
    assert [p.path for p in err.value.problems] == ["images/"]
    report = verify_dataset(REGISTRY.dataset("mit-states"), DataLocations(root=tmp_path / "data"))
    assert any(MIT_PARTIAL in str(p) for p in report.problems), report.problems


def test_a_run_on_a_partial_mit_states_fails_before_training(tmp_path, capsys):
    mit_states_partial(tmp_path / "data" / "mit-states")
    argv = ["run", "--dataset", "mit-states", "--composer", "image-only", "--protocol", "smoke", "--seed", "0",
            "--results", str(tmp_path / "res"), "--cache-dir", str(tmp_path / "cache"), "--threads", "1",
            "--data-root", str(tmp_path / "data")]
    assert main(argv) == 1
    captured = capsys.readouterr()
    assert "DatasetValidationError" in captured.err and "no training noun has two adjectives" in captured.err
    (result,) = list((tmp_path / "res").rglob("seed0.json"))
    record = json.loads(result.read_text())
    assert record["status"] == "failed" and not record.get("train")  # it never trained


# --- validation: each kind on the loaders -----------------------------------------------------------------
def _empty_json_list(root: Path, rels: list[str]) -> None:
    for rel in rels:
        (root / rel).write_text("[]")


def _no_train_css(root: Path) -> None:
    content = css_content()
    content["train"]["mods"] = []
    save_py2_npy(root / CSS_FILE, content)


def _no_train_f200k(root: Path) -> None:
    # hand: "red floral dress" and "green maxi dressdotmark" share no parent caption (each with
    # one word removed), so no training image is modifiable and no pair is drawn
    lines = (root / "labels" / "dress_train_detect_all.txt").read_text().splitlines(keepends=True)
    (root / "labels" / "dress_train_detect_all.txt").write_text(
        "".join(line for line in lines if "/100/" in line or "/104/" in line))


def _no_train_b2w(root: Path) -> None:
    tsv = root / "birds-to-words-v1.0.tsv"
    tsv.write_text(tsv.read_text().replace("\ttrain\t", "\tval\t"))


NO_TRAINING = {  # dataset -> (how to empty its training split, the files the message names)
    "css": (_no_train_css, f"{CSS_FILE} (train mods)"),
    "fashion200k": (_no_train_f200k, "labels/*_train_*.txt"),
    "fashioniq": (lambda r: _empty_json_list(r, [f"captions/cap.{c}.train.json" for c in ("dress", "shirt", "toptee")]),
                  "captions/cap.{dress,shirt,toptee}.train.json"),
    "shoes": (lambda r: (r / "train_im_names.txt").write_text(shoe("clogs", 1) + "\n"),
              "relative_captions_shoes.json (captions whose two images are in train_im_names.txt)"),
    "birds-to-words": (_no_train_b2w, "birds-to-words-v1.0.tsv (rows of split train)"),
    "cirr": (lambda r: _empty_json_list(r, ["cirr/captions/cap.rc2.train.json"]), "cirr/captions/cap.rc2.train.json"),
}


@pytest.mark.parametrize("name", list(NO_TRAINING))
def test_no_training_triplets_is_refused_naming_the_files(name, tmp_path):
    root = write(name, tmp_path / "data")
    empty, files = NO_TRAINING[name]
    empty(root)
    with pytest.raises(DatasetValidationError) as err:
        build(name, tmp_path / "data")
    (problem,) = err.value.problems  # hand: the test split is untouched, so this is the only one
    assert problem.path.startswith(files) and "train_triplets() is empty" in problem.message
    assert f"dataset {name!r} at {root}" in str(err.value)
    report = verify_dataset(REGISTRY.dataset(name), DataLocations(root=tmp_path / "data"))
    assert [str(p) for p in report.problems if "train_triplets()" in str(p)] == [str(problem)]


def test_no_test_queries_is_refused(tmp_path):
    """FashionIQ with empty val captions: no query and (the gallery is the val pairs' images)
    an empty gallery -- hand: two problems; CIRR's gallery is its split file: one."""
    root = write_fashioniq(tmp_path / "a" / "fashioniq")
    _empty_json_list(root, [f"captions/cap.{c}.val.json" for c in ("dress", "shirt", "toptee")])
    with pytest.raises(DatasetValidationError) as err:
        build("fashioniq", tmp_path / "a")
    assert [(p.path, p.message.split(":")[0]) for p in err.value.problems] == [
        ("captions/cap.{dress,shirt,toptee}.val.json", "queries() is empty"), ("gallery()", "is empty")]
    root = write_cirr(tmp_path / "b" / "cirr")
    _empty_json_list(root, ["cirr/captions/cap.rc2.val.json"])
    with pytest.raises(DatasetValidationError) as err:
        build("cirr", tmp_path / "b")
    assert [p.path for p in err.value.problems] == ["cirr/captions/cap.rc2.val.json"]


def _f200k_self_query(root: Path, only: bool) -> None:
    """A test product 300 with one view and a unique caption, and the query ``300_0 300_0``:
    its only correct target is its reference, which is never ranked."""
    p = "women/dresses/casual_and_day_dresses/300/300_0.jpeg"
    write_image(root / p, 3000, size=(16, 24))
    with open(root / "labels" / "dress_test_detect_all.txt", "a") as fh:
        fh.write(f"{p}\t0.9\tpurple velvet dress\n")
    queries = "" if only else (root / "test_queries.txt").read_text()
    (root / "test_queries.txt").write_text(queries + f"{p} {p}\n")


def test_queries_without_a_target_warn_with_the_count(tmp_path, capsys):
    """Hand: the fixture's 3 queries can be answered, the added one cannot: 1 of 4."""
    root = write_fashion200k(tmp_path / "data" / "fashion200k")
    _f200k_self_query(root, only=False)
    with pytest.warns(DatasetValidationWarning) as caught:
        ds = build("fashion200k", tmp_path / "data")
    (w,) = [str(c.message) for c in caught]
    assert "1 of 4 queries have no correct target in the gallery they are ranked against" in w
    assert "Recall@K counts them as misses" in w
    # hand: the captions are equal, so TIRG's different_words gives the last word twice
    assert ("query 3 ('replace dress with dress', reference women/dresses/casual_and_day_dresses/300/300_0.jpeg"
            in w) and "its only correct target is its reference" in w
    assert w.startswith("dataset 'fashion200k': labels/dress_test_detect_all.txt:")
    assert len(ds.queries()) == 4
    report = verify_dataset(REGISTRY.dataset("fashion200k"), DataLocations(root=tmp_path / "data"))
    assert report.ok and len(report.warnings) == 1 and "1 of 4 queries" in str(report.warnings[0])
    assert main(["data", "verify", "fashion200k", "--data-root", str(tmp_path / "data")]) == 0  # a warning only
    out = capsys.readouterr().out
    assert "warning: labels/dress_test_detect_all.txt:9: 1 of 4 queries have no correct target" in out
    assert "OK: no problems" in out


def test_no_answerable_query_is_refused(tmp_path):
    root = write_fashion200k(tmp_path / "data" / "fashion200k")
    _f200k_self_query(root, only=True)
    with pytest.raises(DatasetValidationError, match="none of the 1 queries has a correct target"):
        build("fashion200k", tmp_path / "data")


def test_duplicate_gallery_entries_are_refused(tmp_path):
    """CIRR's val split file naming one path twice (hand: one image, listed 2 times), and two
    entries that are one file through a link inside the root (hand: one pair)."""
    root = write_cirr(tmp_path / "a" / "cirr")
    split = root / "cirr" / "image_splits" / "split.rc2.val.json"
    names = json.loads(split.read_text())
    names["dev-dup-img"] = names["dev-3-img"]
    split.write_text(json.dumps(names))
    with pytest.raises(DatasetValidationError) as err:
        build("cirr", tmp_path / "a")
    (problem,) = err.value.problems
    assert problem.path == "cirr/image_splits/split.rc2.val.json"
    assert "gallery() lists ids more than once: 1 image(s), dev/dev-3-img.png (id" in problem.message
    assert "2 times" in problem.message
    report = verify_dataset(REGISTRY.dataset("cirr"), DataLocations(root=tmp_path / "a"))
    assert any("gallery() lists ids more than once" in str(p) for p in report.problems)

    root = write_cirr(tmp_path / "b" / "cirr")
    (root / "dev" / "dev-7-img.png").unlink()
    os.symlink("dev-6-img.png", root / "dev" / "dev-7-img.png")
    with pytest.raises(DatasetValidationError) as err:
        build("cirr", tmp_path / "b")
    (problem,) = err.value.problems
    assert problem.path == "gallery()" and "1 pair(s) of gallery entries are the same file" in problem.message
    assert "dev/dev-6-img.png and dev/dev-7-img.png" in problem.message


# --- validation: the core, on any dataset ------------------------------------------------------------------
class _TargetsOutside(RandomDataset):
    """Queries ``bad`` get training image 0 as their only target (not in the gallery)."""

    def __init__(self, image_size, bad):
        super().__init__(image_size)
        self._queries = [Query(q.reference, q.text, (0,), q.group) if i in bad else q
                         for i, q in enumerate(self._queries)]


class _NoTriplets(RandomDataset):
    def train_triplets(self):
        return []


class _DuplicateGallery(RandomDataset):
    def gallery(self, group=None):
        g = super().gallery(group)
        return np.concatenate([g, g[:2]])


class _BadIds(RandomDataset):
    def queries(self):
        qs = list(super().queries())
        qs[1] = Query(10_000, qs[1].text, qs[1].targets, qs[1].group)
        qs[5] = Query(qs[5].reference, qs[5].text, (-1,), qs[5].group)
        return qs


def _spec(make) -> DatasetSpec:
    return DatasetSpec("toy", lambda ctx: make(ctx.protocol.image_size))


def test_embedded_datasets_pass_validation():
    for name in ("css-synth", "fashion-synth"):
        result = validate_dataset(REGISTRY.dataset(name).create(SMOKE, None, validate=False))
        assert result.ok and not result.warnings, (name, result)
    assert validate_dataset(RandomDataset(16)).ok


def test_validation_on_any_dataset():
    """Through ``DatasetSpec.create`` (the runner's way); RandomDataset has 8 queries."""
    with pytest.warns(DatasetValidationWarning, match="2 of 8 queries have no correct target"):
        _spec(lambda s: _TargetsOutside(s, bad={0, 3})).create(PROTOCOL, None)
    with pytest.raises(DatasetValidationError, match="none of the 8 queries"):
        _spec(lambda s: _TargetsOutside(s, bad=set(range(8)))).create(PROTOCOL, None)
    with pytest.raises(DatasetValidationError, match=r"train_triplets\(\): train_triplets\(\) is empty"):
        _spec(_NoTriplets).create(PROTOCOL, None)
    with pytest.raises(DatasetValidationError) as err:
        _spec(_DuplicateGallery).create(PROTOCOL, None)
    (problem,) = err.value.problems  # hand: the first two gallery ids appear twice
    assert "lists ids more than once: 2 image(s)" in problem.message
    with pytest.raises(DatasetValidationError) as err:
        _spec(_BadIds).create(PROTOCOL, None)
    (problem,) = err.value.problems  # hand: queries 1 (reference 10000) and 5 (target -1)
    assert problem.message.startswith("2 query(s) name images that do not exist (valid: ints in [0, 20))")
    assert "query 1 (" in problem.message and "query 5 (" in problem.message
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the check path neither raises nor warns
        _spec(_NoTriplets).create(PROTOCOL, None, validate=False)


def test_image_globs_and_verify_follow_the_rule(tmp_path):
    """A layout listing its images by ``image_globs`` (the default ``image_entries``): a file
    link and a folder link inside are followed; one out is one problem naming the link."""
    from cirbench.data import DataLayout

    layout = DataLayout(folder="toy", image_globs=("imgs/*.jpg",))
    spec = DatasetSpec("toy", lambda ctx: RandomDataset(16), layout=layout)
    root = tmp_path / "toy"
    write_image(root / "store" / "a.jpg", 1)
    write_image(root / "store" / "b.jpg", 2)
    (root / "imgs").mkdir()
    os.symlink("../store/a.jpg", root / "imgs" / "a.jpg")
    report = verify_dataset(spec, DataLocations(overrides={"toy": root}))
    assert [e.entry for e in layout.image_entries(root)] == ["imgs/a.jpg"]
    assert report.ok and report.images_listed == report.images_ok == 1
    write_image(tmp_path / "out" / "c.jpg", 3)
    os.symlink(tmp_path / "out" / "c.jpg", root / "imgs" / "c.jpg")
    report = verify_dataset(spec, DataLocations(overrides={"toy": root}))
    (problem,) = report.problems
    assert problem.path == "imgs/*.jpg"
    assert f"entry 'imgs/c.jpg' goes through the symbolic link imgs/c.jpg -> {tmp_path / 'out' / 'c.jpg'}" \
        in problem.message
