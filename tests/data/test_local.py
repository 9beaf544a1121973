"""Local datasets (cirbench/data/local.py and its neighbours): locations, availability messages,
path safety, decoding errors, the decoded-image cache, `data verify`, the CLI (`list`, `run
--all`, `data`), the full-* presets and the conformance of the css, css-2d, fashion200k and
mit-states loaders (their own rules: tests/plugins/<name>/)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from cirbench import DatasetContext
from cirbench.cli import main
from cirbench.data import (
    CorruptImageError,
    DataLayout,
    DataLocations,
    DatasetNotAvailable,
    ImageIndex,
    ImageTransform,
    Requirement,
    UnsafePathError,
    dataset_env_var,
    decode_image,
    resolve_under,
)
from cirbench.data.cache import ArrowImageCache, cache_entries, clear_cache
from cirbench.data.locations import parse_overrides
from cirbench.data.verify import verify_dataset
from cirbench.testing import CheckContext, parametrize_with_checks
from tests.fixtures.protocols import SMOKE
from tests.fixtures.local_data import (
    corrupt,
    f200k_path,
    write_css,
    write_fashion200k,
    write_image,
    write_mit_states,
)
from tests.fixtures.local_loaders import REGISTRY, build
from tests.fixtures.local_loaders import _quiet, data_root  # noqa: F401  (pytest fixtures)


LOCAL = ("css", "css-2d", "fashion200k", "mit-states")


# --- locations ----------------------------------------------------------------------------------
def test_locations_resolution_order(tmp_path, monkeypatch):
    assert dataset_env_var("mit-states") == "CIRBENCH_DATA_MIT_STATES"
    monkeypatch.setenv("CIRBENCH_DATA", str(tmp_path / "env-root"))
    assert DataLocations().root_for("mit-states") == tmp_path / "env-root" / "mit-states"
    assert DataLocations(root=tmp_path / "opt").root_for("css-2d", "css") == tmp_path / "opt" / "css"
    monkeypatch.setenv("CIRBENCH_DATA_MIT_STATES", str(tmp_path / "mine"))
    assert DataLocations(root=tmp_path / "opt").root_for("mit-states") == tmp_path / "mine"
    data = DataLocations.from_options(tmp_path / "opt", [f"mit-states={tmp_path / 'cli'}"])
    assert data.root_for("mit-states") == tmp_path / "cli"
    assert "--data mit-states" in data.origin("mit-states")
    with pytest.raises(ValueError, match="expected NAME=PATH"):
        parse_overrides(["fashion200k"])


# --- availability ---------------------------------------------------------------------------------
def test_missing_dataset_message_names_files_counts_and_url(tmp_path):
    root = tmp_path / "empty"
    (root / "fashion200k" / "labels").mkdir(parents=True)
    (root / "fashion200k" / "labels" / "dress_train_detect_all.txt").write_text("")
    spec = REGISTRY.dataset("fashion200k")
    with pytest.raises(DatasetNotAvailable) as err:
        spec.create(SMOKE, None, DataLocations(root=root))
    msg = str(err.value)
    assert str(root / "fashion200k") in msg
    assert "labels/*_test_*.txt (test label files), found 0" in msg
    assert "test_queries.txt" in msg and "women" in msg
    assert "labels/*_train_*.txt" not in msg.split("expected there")[0]  # that one is met
    assert "https://github.com/xthan/fashion-200k" in msg
    assert "--data fashion200k=PATH" in msg and "CIRBENCH_DATA_FASHION200K" in msg
    avail = spec.availability(DataLocations(root=root))
    assert not avail.ok and str(avail).startswith("not found (")
    nothing = spec.availability(DataLocations(root=tmp_path / "nowhere"))
    assert "the folder does not exist" in nothing.detail


def test_requirement_min_count(tmp_path):
    layout = DataLayout(folder="x", url="http://x", requirements=(Requirement("*.json", "captions", min_count=3),))
    (tmp_path / "a.json").write_text("{}")
    with pytest.raises(DatasetNotAvailable, match=r"at least 3 files matching \*.json \(captions\), found 1"):
        layout.check("x", tmp_path)
    with pytest.raises(TypeError, match="unknown attribute 'folders'"):
        DataLayout(folders="x")


def test_build_without_root_reads_the_environment(data_root, monkeypatch):
    from cirbench_mit_states import MitStatesDataset

    monkeypatch.setenv("CIRBENCH_DATA", str(data_root))
    ds = REGISTRY.dataset("mit-states").build(DatasetContext(SMOKE))  # no root: from the environment
    assert isinstance(ds, MitStatesDataset) and ds.root == data_root / "mit-states"


# --- path safety ----------------------------------------------------------------------------------
@pytest.mark.parametrize("entry", ["../secret.jpg", "a/../../b.jpg", "/etc/passwd", "C:\\x.jpg", "..\\x.jpg", ""])
def test_unsafe_entries_are_refused(tmp_path, entry):
    with pytest.raises(UnsafePathError) as err:
        resolve_under(tmp_path, entry, "captions/cap.json")
    assert "captions/cap.json" in str(err.value) and repr(entry) in str(err.value)


def test_symlink_out_of_the_root_is_refused(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    root = tmp_path / "root"
    root.mkdir()
    os.symlink(outside, root / "link")
    with pytest.raises(UnsafePathError, match="symbolic link"):
        resolve_under(root, "link/x.jpg", "labels.txt")
    assert resolve_under(root, "a/./b/../c.jpg", "labels.txt") == Path(os.path.realpath(root)) / "a" / "c.jpg"


_part = st.sampled_from(["a", "b", "..", ".", "img.jpg", "x y", "é"])


@settings(max_examples=200, deadline=None)
@given(parts=st.lists(_part, min_size=1, max_size=6), absolute=st.booleans())
def test_resolved_paths_never_leave_the_root(tmp_path_factory, parts, absolute):
    """Property: an entry is either refused or resolves to a path inside the root, and it is
    refused exactly when its '..' components climb above the root (or it is absolute)."""
    root = tmp_path_factory.getbasetemp() / "prop-root"
    root.mkdir(exist_ok=True)
    entry = ("/" if absolute else "") + "/".join(parts)
    depth, climbs = 0, False
    for p in parts:
        depth = depth - 1 if p == ".." else depth + (p != ".")
        climbs |= depth < 0
    try:
        path = resolve_under(root, entry, "manifest.txt")
    except UnsafePathError:
        assert absolute or climbs or depth == 0
        return
    assert not absolute and not climbs
    real_root = Path(os.path.realpath(root))
    assert real_root in path.parents


def test_manifest_entry_outside_root_is_refused_by_a_loader(data_root):
    labels = data_root / "fashion200k" / "labels" / "dress_test_detect_all.txt"
    labels.write_text(labels.read_text() + "../../etc/passwd\t0.1\tevil dress\n")
    with pytest.raises(UnsafePathError) as err:
        build("fashion200k", data_root, None)
    assert "'../../etc/passwd'" in str(err.value) and "labels/dress_test_detect_all.txt:9" in str(err.value)


def test_image_index_dedups_and_looks_up(tmp_path):
    index = ImageIndex(tmp_path)
    assert index.add("a/b.jpg", "f") == 0 and index.add("a/./b.jpg", "g") == 0 and index.add("c.jpg", "f") == 1
    assert index.get("a/b.jpg") == 0 and index.get("missing.jpg") is None and index.get("../x") is None
    assert len(index) == 2 and index.sources == ["f", "f"]


# --- decoding -------------------------------------------------------------------------------------
def test_corrupt_image_names_its_file(data_root):
    path = data_root / "mit-states" / "images" / "red apple" / "img_0.jpg"
    corrupt(path)
    with pytest.raises(CorruptImageError) as err:
        decode_image(path)
    assert str(path) in str(err.value)
    ds = build("mit-states", data_root, None)
    with pytest.raises(CorruptImageError, match="red apple/img_0.jpg"):
        ds.images(range(ds.num_images))


@pytest.mark.parametrize("mode", ["center_crop", "stretch", "pad"])
def test_transforms_give_square_uint8(tmp_path, mode):
    path = write_image(tmp_path / "x.png", 1, size=(30, 10))
    out = decode_image(path, ImageTransform(8, mode))
    assert out.shape == (8, 8, 3) and out.dtype == np.uint8
    if mode == "pad":
        assert (out[0] == 255).all()  # the padding is white


# --- the decoded-image cache ------------------------------------------------------------------------
def _count_opens(monkeypatch) -> list[str]:
    opened: list[str] = []
    real = PIL.Image.open

    def counting(fp, *a, **k):
        opened.append(str(fp))
        return real(fp, *a, **k)

    monkeypatch.setattr(PIL.Image, "open", counting)
    return opened


def test_cache_decodes_once_then_reuses(data_root, tmp_path, monkeypatch):
    opened = _count_opens(monkeypatch)
    cache = tmp_path / "cache"
    ds = build("mit-states", data_root, cache)
    assert opened == []  # lazy: nothing decoded at build time
    first = ds.images([0, 3, 5])
    assert len(opened) == ds.num_images  # the whole dataset decoded once
    again = ds.images([5, 0])
    assert len(opened) == ds.num_images
    # a second build (a second model / process) opens the Arrow cache: no decoding at all
    ds2 = build("mit-states", data_root, cache)
    assert torch.equal(ds2.images([0, 3, 5]), first) and torch.equal(again, first[[2, 0]])
    assert len(opened) == ds.num_images
    # the pixels are what decoding gives
    direct = decode_image(ds.path_of(3), ds.transform)
    assert np.array_equal(first[1].permute(1, 2, 0).numpy(), direct)
    # another transform (image size) is another cache
    build("mit-states", data_root, cache, size=32).images([0])
    assert len(opened) == 2 * ds.num_images + 1  # + the direct decode above
    entries = cache_entries(cache)
    assert sorted(e.label for e in entries) == ["v1-center_crop32-d2", "v1-center_crop64-d2"]
    assert all(e.kind == "images" and e.name == "mit-states" and e.complete and e.entries == ds.num_images
               for e in entries)
    assert {e.built_from for e in entries} == {os.path.realpath(data_root / "mit-states")}


def test_interrupted_build_leaves_no_cache(data_root, tmp_path, monkeypatch):
    ds = build("mit-states", data_root, tmp_path / "cache")
    corrupt(ds.path_of(4))
    with pytest.raises(CorruptImageError, match=str(ds.path_of(4).name)):
        ds.images([0])
    root = tmp_path / "cache" / "images"
    assert [p for p in root.iterdir()] == []  # the temporary folder is gone, nothing half-written
    write_image(ds.path_of(4), 3)
    assert ds.images([4]).shape == (1, 3, 64, 64)


def test_invalid_cache_is_rebuilt(data_root, tmp_path, monkeypatch):
    ds = build("mit-states", data_root, tmp_path / "cache")
    ds.images([0])
    (folder,) = (tmp_path / "cache" / "images").iterdir()
    (folder / "meta.json").write_text("{not json")
    opened = _count_opens(monkeypatch)
    ds2 = build("mit-states", data_root, tmp_path / "cache")
    assert ds2.images([1]).shape == (1, 3, 64, 64) and len(opened) == ds.num_images


def test_cache_list_and_clear(data_root, tmp_path, capsys):
    cache = tmp_path / "cache"
    build("mit-states", data_root, cache).images([0])
    build("fashion200k", data_root, cache).images([0])
    (cache / "images" / ".css-v1-stretch64-abc.tmp-x").mkdir()  # leftover of an interrupted build
    assert main(["data", "cache", "list", "--cache-dir", str(cache)]) == 0
    out = capsys.readouterr().out
    assert "mit-states" in out and "fashion200k" in out and "center_crop64" in out
    assert "interrupted build" in out
    assert main(["data", "cache", "clear", "mit-states", "--cache-dir", str(cache)]) == 0
    assert "1 cache(s) of mit-states removed" in capsys.readouterr().out
    assert sorted(e.name for e in cache_entries(cache)) == ["css", "fashion200k"]
    assert main(["data", "cache", "clear", "--cache-dir", str(cache)]) == 0
    assert cache_entries(cache) == []
    assert main(["data", "cache", "clear", "nope", "--cache-dir", str(cache)]) == 2


def test_arrow_cache_direct(tmp_path):
    files = [write_image(tmp_path / f"{i}.png", i) for i in range(5)]
    cache = ArrowImageCache(tmp_path / "c", "toy", 1, ImageTransform(4, "stretch"), [f.name for f in files], files)
    assert not cache.ready()
    out = cache.images([4, 0, 4])
    assert out.shape == (3, 4, 4, 3) and np.array_equal(out[0], out[2])
    assert cache.ready() and cache.images([]).shape == (0, 4, 4, 3)
    assert clear_cache(tmp_path / "c", "other") == [] and len(clear_cache(tmp_path / "c", "toy")) == 1


# --- data verify ----------------------------------------------------------------------------------------
def test_verify_clean_copy(data_root, capsys):
    assert main(["data", "verify", "fashion200k", "--data-root", str(data_root)]) == 0
    out = capsys.readouterr().out
    assert "images referenced by the annotations: 18, decodable: 18" in out and "OK: no problems" in out
    report = verify_dataset(REGISTRY.dataset("mit-states"), DataLocations(root=data_root))
    assert report.images_listed == report.images_ok == 12
    (count,) = report.counts
    assert (count.found, count.expected) == (2, 49)  # the fixture holds 2 of the 49 test nouns ...
    # ... which verify reports as the only problem
    assert not report.ok
    assert [str(p) for p in report.problems] == [
        f"{data_root / 'mit-states'}: TIRG's test nouns with images: found 2, published 49 (docs/papers.md §1.3)"]


def test_verify_reports_one_line_per_problem_file(data_root, capsys):
    root = data_root / "fashion200k"
    corrupt(root / f200k_path("200", 1))
    (root / f200k_path("201", 0)).unlink()
    import shutil

    shutil.rmtree(root / "women" / "dresses" / "casual_and_day_dresses" / "103")
    (root / "women" / "tops").rmdir()
    assert main(["data", "verify", "fashion200k", "--data", f"fashion200k={root}"]) == 1
    out = capsys.readouterr().out
    lines = [line.strip() for line in out.splitlines() if line.startswith("  ")]
    assert any(f200k_path("200", 1) in line and "corrupt" in line for line in lines), out
    assert any(f200k_path("201", 0) in line and "missing (listed in labels/dress_test_detect_all.txt:3)" in line
               for line in lines), out
    assert sum("/103/" in line and "missing" in line for line in lines) == 2, out
    assert "category folders women/{dresses,jackets,pants,skirts,tops}: found 4, published 5" in out
    assert "5 problem(s)" in out
    assert "published at https://github.com/xthan/fashion-200k" in out


def test_verify_missing_dataset_and_embedded(tmp_path, capsys):
    assert main(["data", "verify", "mit-states", "--data-root", str(tmp_path)]) == 1
    assert "the folder does not exist" in capsys.readouterr().err
    assert main(["data", "verify", "css-synth"]) == 2


# --- CLI: list, run, check ---------------------------------------------------------------------------
def test_list_marks_availability(data_root, tmp_path, capsys):
    (data_root / "mit-states" / "images").rename(data_root / "mit-states" / "pictures")
    assert main(["list", "--data-root", str(data_root)]) == 0
    rows = {line.split()[0]: line for line in capsys.readouterr().out.splitlines() if line.split()}
    for name in ("css", "css-2d", "fashion200k", "css-synth"):
        assert "available (" in rows[name] and "not found" not in rows[name], rows[name]
    assert "not found (" in rows["mit-states"]


def test_run_all_skips_unavailable_datasets(data_root, tmp_path, capsys, monkeypatch):
    from types import SimpleNamespace

    import cirbench.runner

    ran: list[str] = []
    done = SimpleNamespace(status="ok", error=None, metrics=None, wall_seconds=0)  # what the CLI reads of a RunResult
    monkeypatch.setattr(cirbench.runner.Runner, "run_one", lambda self, key: ran.append(key.dataset) or done)
    import shutil

    shutil.rmtree(data_root / "fashion200k")
    argv = ["run", "--all", "--composer", "image-only", "--protocol", "smoke", "--seed", "0",
            "--results", str(tmp_path / "res"), "--cache-dir", str(tmp_path / "cache"),
            "--data-root", str(data_root)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert f"skipped dataset fashion200k: not found ({data_root / 'fashion200k'}: the folder does not exist)" in out
    summary = next(line for line in out.splitlines() if "dataset(s) not available, skipped:" in line)
    skipped = summary.split("skipped:")[1].split("(")[0].replace(",", " ").split()
    assert "fashion200k" in skipped and not {"css", "css-2d", "mit-states", "css-synth"} & set(skipped)
    assert "fashion200k" not in ran and {"css", "css-2d", "mit-states", "css-synth"} <= set(ran)
    # an explicitly named unavailable dataset is an error naming the path
    assert main(argv[:1] + ["--dataset", "fashion200k"] + argv[2:]) == 2
    err = capsys.readouterr().err
    assert "dataset 'fashion200k' is not available at" in err and str(data_root / "fashion200k") in err
    assert main(["list", "--data", "nope=/x"]) == 2


def test_smoke_run_on_a_local_dataset(data_root, tmp_path, capsys):
    argv = ["run", "--dataset", "mit-states", "--composer", "image-only", "--protocol", "smoke", "--seed", "0",
            "--results", str(tmp_path / "res"), "--cache-dir", str(tmp_path / "cache"), "--threads", "1"]
    assert main(argv + ["--data", f"mit-states={data_root / 'mit-states'}"]) == 0
    assert "ok: R@1" in capsys.readouterr().out
    assert any(e.kind == "images" and e.name == "mit-states" for e in cache_entries(tmp_path / "cache"))


def test_full_protocols_carry_paper_settings():
    p = REGISTRY.protocols
    assert p["full-fashion200k"].ks == (1, 10, 50) and p["full-fashion200k"].lr_decay_every == 50_000
    assert p["full-mit-states"].ks == (1, 5, 10) and p["full-mit-states"].weight_decay == 5e-5
    assert p["full-css"].ks[0] == 1 and p["full-css"].lr_decay_every is None
    assert all(p[n].iterations == 160_000 and p[n].batch_size == 32 for n in ("full-css", "full-fashion200k", "full-mit-states"))


# --- conformance on the fixtures --------------------------------------------------------------------------
#: One context for the conformance tests; its data locations point at the fixtures (set below).
CONFORMANCE = CheckContext(registry=REGISTRY)


@pytest.fixture(scope="module")
def conformance_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("conformance-data")
    write_css(root / "css")
    write_fashion200k(root / "fashion200k")
    write_mit_states(root / "mit-states")
    CONFORMANCE.data = DataLocations(root=root)
    return root


@parametrize_with_checks(datasets=list(LOCAL), context=CONFORMANCE)
def test_local_datasets_conform(name, check, conformance_data):
    check(name)
