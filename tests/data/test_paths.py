"""One rule for symbolic links, on every loader, ``data verify`` and the layout checks
(cirbench/data/paths.py): a link that stays inside the dataset folder is followed, a link
leading out is refused with the entry, the link and its target named."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cirbench.data import (
    DataLocations,
    DatasetNotAvailable,
    DatasetSpec,
    UnsafePathError,
    find_inside,
    list_inside,
    resolve_under,
)
from cirbench.data.paths import LINK_FIX, outside_link
from cirbench.data.verify import verify_dataset
from cirbench.testing import RandomDataset
from tests.fixtures.local_data import write_cirr, write_fashioniq, write_image, write_mit_states, write_shoes
from tests.fixtures.data_checks import LOCAL, PROTOCOL, REGISTRY, build, write
from tests.fixtures.data_checks import _quiet  # noqa: F401  (pytest fixtures)


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
