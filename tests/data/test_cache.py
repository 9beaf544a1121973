"""The caches (cirbench.data.cache): one key rule, one stale rule, one home for every kind.

Issue 10 §1's examples, each with its hand-computed expectation:
* two copies of FashionIQ under different roots, sharing the cache folder, the second with a
  target replaced by a pixel copy of its reference: each copy gets its own Recall;
* an image fixed in place (same path, new pixels) is noticed by the next run;
* an image deleted after the cache was built raises the loader's error naming it;
and the other members of the kind: generated datasets, frozen text embeddings, listing and
clearing every kind.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from cirbench import DatasetContext
from cirbench.cli import main
from cirbench.composer import Composer, ComposerContext
from cirbench.data import cache
from cirbench.data.cache import ArrowImageCache, CacheKey, Sources, cache_entries, clear_cache
from cirbench.data import DataLocations
from cirbench.data.decode import ImageTransform, decode_image
from cirbench.data.errors import AnnotationError, CorruptImageError
from cirbench.data.model_inputs import IMAGENET_MEAN, IMAGENET_STD
from cirbench.evaluate import evaluate
from cirbench.plugins import load_registry
from cirbench.storage import atomic_write_folder
from cirbench_fashioniq.dataset import FashionIQDataset
from tests.fixtures.protocols import SMOKE
from tests.fixtures.local_data import (
    FIQ_PNG,
    write_birds_to_words,
    write_cirr,
    write_css,
    write_fashion200k,
    write_fashioniq,
    write_image,
    write_mit_states,
    write_shoes,
)

# --- FashionIQ copies whose Recall@1 is computed by hand ----------------------------------------------

# The fixture's val split (tests/fixtures/local_data.py FIQ_PAIRS), 11 queries (one per
# non-blank caption; the self pair DV3->DV3 is left out), each category ranked against its
# own gallery, in insertion order:
#   dress  gallery [DV0, DV1, DV2, DV3]: DV0->DV1 (2 captions), DV1->DV2 (1: " " is blank)
#   shirt  gallery [SV0, SV1, SV2]:      SV0->SV1 (2), SV2->SV0 (2)
#   toptee gallery [TV0, SV0, TV1]:      TV0->SV0 (2), TV1->TV0 (2)
# Every val image is one solid colour (red r, green 128, blue 128), and the composer below
# embeds an image as the unit vector at angle (pi/2) * r / 255, so the cosine similarity of two
# images is cos of their angle difference: the nearest image is the one of closest red.
RED = {"DV0": 100, "DV1": 200, "DV2": 20, "DV3": 120,
       "SV0": 100, "SV1": 120, "SV2": 200,
       "TV0": 220, "TV1": 240}
# By hand (nearest other gallery image by |r difference|; the reference itself is left out):
#   DV0 (100) -> {DV1 100, DV2 80, DV3 20}: DV3, target DV1: miss x2
#   DV1 (200) -> {DV0 100, DV2 180, DV3 80}: DV3, target DV2: miss x1
#   SV0 (100) -> {SV1 20, SV2 100}: SV1 = target: hit x2
#   SV2 (200) -> {SV0 100, SV1 80}: SV1, target SV0: miss x2
#   TV0 (220) -> {SV0 120, TV1 20}: TV1, target SV0: miss x2
#   TV1 (240) -> {TV0 20, SV0 140}: TV0 = target: hit x2
# R@1 = 4 / 11 = 0.364.
R1_FIRST_COPY = 4 / 11
# The second copy replaces the target DV1 by a pixel copy of its reference DV0 (r = 100):
#   DV0 -> {DV1 0, DV2 80, DV3 20}: DV1 = target: hit x2
#   DV1 (now 100) -> {DV0 0, ...}: DV0, target DV2: miss x1; the other queries do not see DV1.
# R@1 = 6 / 11 = 0.545.
R1_SECOND_COPY = 6 / 11


class RedAngle(Composer):
    """Ignores the text; embeds an image as (cos a, sin a), a = (pi/2) * mean red / 255."""

    def _embed(self, images: torch.Tensor) -> torch.Tensor:
        red = (images[:, 0] * IMAGENET_STD[0] + IMAGENET_MEAN[0]).mean(dim=(1, 2))  # in [0, 1]
        angle = red * (math.pi / 2)
        return torch.stack([angle.cos(), angle.sin()], 1)

    def compose(self, images, texts):
        return self._embed(images)

    def embed_target(self, images):
        return self._embed(images)

    def training_loss(self, batch):  # never trained here
        raise NotImplementedError


def write_solid(path: Path, red: int) -> None:
    fmt = "PNG" if path.suffix == ".png" else "JPEG"
    Image.new("RGB", (18, 24), (red, 128, 128)).save(path, format=fmt, quality=95)


def fashioniq_copy(root: Path) -> Path:
    write_fashioniq(root)
    for asin, red in RED.items():
        write_solid(root / "images" / f"{asin}.{'png' if asin == FIQ_PNG else 'jpg'}", red)
    return root


def image_file(root: Path, asin: str) -> Path:
    return root / "images" / f"{asin}.{'png' if asin == FIQ_PNG else 'jpg'}"


def recall_at_1(root: Path, cache_dir: Path) -> float:
    """A fresh dataset (what a new run builds) and a real Recall@1 through evaluate()."""
    ds = FashionIQDataset.build(DatasetContext(SMOKE, cache_dir, root))
    assert len(ds.queries()) == 11
    composer = RedAngle(ComposerContext(protocol=SMOKE, train_texts=[]))
    return evaluate(composer, ds, ks=(1,)).overall["R@1"]


@pytest.fixture()
def first_copy(tmp_path) -> Path:
    return fashioniq_copy(tmp_path / "copy1" / "fashioniq")


def test_the_composer_gives_the_hand_computed_recall_without_a_cache(first_copy):
    # the reference point: decoding every image, no cache involved
    ds = FashionIQDataset.build(DatasetContext(SMOKE, None, first_copy))
    composer = RedAngle(ComposerContext(protocol=SMOKE, train_texts=[]))
    assert evaluate(composer, ds, ks=(1,)).overall["R@1"] == pytest.approx(R1_FIRST_COPY, abs=1e-4)


def test_two_copies_under_different_roots_never_share_a_cache(tmp_path, first_copy):
    second = tmp_path / "copy2" / "fashioniq"
    shutil.copytree(first_copy, second)
    shutil.copyfile(image_file(second, "DV0"), image_file(second, "DV1"))  # a pixel copy of its reference
    shared = tmp_path / "cache"
    assert recall_at_1(first_copy, shared) == pytest.approx(R1_FIRST_COPY, abs=1e-4)  # 0.364
    assert recall_at_1(second, shared) == pytest.approx(R1_SECOND_COPY, abs=1e-4)  # 0.545, not 0.364
    # and back again: each copy kept its own cache
    assert recall_at_1(first_copy, shared) == pytest.approx(R1_FIRST_COPY, abs=1e-4)
    entries = cache_entries(shared, "images")
    assert sorted(e.built_from for e in entries) == sorted([os.path.realpath(first_copy), os.path.realpath(second)])
    assert len({e.folder for e in entries}) == 2


@pytest.mark.parametrize("content_limit", [cache.CONTENT_HASH_LIMIT, 0], ids=["hashed", "stat-only"])
def test_an_image_fixed_in_place_is_noticed(tmp_path, first_copy, monkeypatch, caplog, content_limit):
    monkeypatch.setattr(cache, "CONTENT_HASH_LIMIT", content_limit)
    shared = tmp_path / "cache"
    assert recall_at_1(first_copy, shared) == pytest.approx(R1_FIRST_COPY, abs=1e-4)
    dv1 = image_file(first_copy, "DV1")
    before = os.stat(dv1)
    shutil.copyfile(image_file(first_copy, "DV0"), dv1)  # fixed in place: same path, new pixels
    os.utime(dv1, ns=(before.st_atime_ns, before.st_mtime_ns + 10**9))  # a later time, as an edit gives
    with caplog.at_level(logging.WARNING, logger="cirbench.data.cache"):
        assert recall_at_1(first_copy, shared) == pytest.approx(R1_SECOND_COPY, abs=1e-4)  # what `run --force` does
    assert "is stale" in caplog.text and str(dv1) in caplog.text
    assert len(cache_entries(shared, "images")) == 1  # rebuilt in place, not beside


def _jpeg_of_size(red: int, size: int) -> bytes:
    """A solid JPEG (red, 128, 128) padded to ``size`` bytes with a comment segment."""
    import io

    buf = io.BytesIO()
    Image.new("RGB", (18, 24), (red, 128, 128)).save(buf, format="JPEG", quality=95)
    data = buf.getvalue()
    n = size - len(data) - 4
    assert n >= 0
    return data[:2] + b"\xff\xfe" + (n + 2).to_bytes(2, "big") + b" " * n + data[2:]


def test_same_size_and_time_but_new_content_is_noticed_when_small(tmp_path, first_copy, caplog):
    # DV1 replaced by DV0's pixels in a file of the same size, its time put back (as `cp -p`
    # or `rsync -a` of a fixed copy can leave it): only the content digest can tell.
    dv1 = image_file(first_copy, "DV1")
    dv1.write_bytes(_jpeg_of_size(RED["DV1"], 800))
    shared = tmp_path / "cache"
    assert recall_at_1(first_copy, shared) == pytest.approx(R1_FIRST_COPY, abs=1e-4)
    before = os.stat(dv1)
    dv1.write_bytes(_jpeg_of_size(RED["DV0"], 800))
    os.utime(dv1, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert os.stat(dv1).st_size == before.st_size and os.stat(dv1).st_mtime_ns == before.st_mtime_ns
    with caplog.at_level(logging.WARNING, logger="cirbench.data.cache"):
        assert recall_at_1(first_copy, shared) == pytest.approx(R1_SECOND_COPY, abs=1e-4)
    assert f"{dv1}: content changed" in caplog.text


def test_a_deleted_image_raises_instead_of_serving_cached_pixels(tmp_path, first_copy):
    shared = tmp_path / "cache"
    assert recall_at_1(first_copy, shared) == pytest.approx(R1_FIRST_COPY, abs=1e-4)
    dv2 = image_file(first_copy, "DV2")
    dv2.unlink()
    ds = FashionIQDataset.build(DatasetContext(SMOKE, shared, first_copy))
    with pytest.raises(CorruptImageError, match="DV2.jpg") as err:
        ds.images([0])  # any image: the cache as a whole is no longer what the files say
    assert err.value.path == str(dv2)
    with pytest.raises(CorruptImageError, match="DV2.jpg"):
        recall_at_1(first_copy, shared)
    # the cache itself is left alone: the file put back as it was makes it valid again
    assert len(cache_entries(shared, "images")) == 1


def test_a_deleted_image_fails_the_run(tmp_path, first_copy, capsys):
    argv = ["run", "--dataset", "fashioniq", "--composer", "image-only", "--protocol", "smoke", "--seed", "0",
            "--results", str(tmp_path / "res"), "--cache-dir", str(tmp_path / "cache"), "--threads", "1",
            "--data", f"fashioniq={first_copy}"]
    assert main(argv) == 0
    assert "ok: R@1" in capsys.readouterr().out
    image_file(first_copy, "SV2").unlink()
    main(argv + ["--force"])  # the exit status of a grid with failed runs is the runner's business
    out = capsys.readouterr().out
    assert "ok: R@1" not in out
    assert f"failed: CorruptImageError: cannot decode image {image_file(first_copy, 'SV2')}: file not found" in out


# Every loader of image files goes through LocalImageDataset's ArrowImageCache: the same
# rule for each (the dataset, the folder it reads, its fixture writer).
IMAGE_LOADERS = [
    ("css", "css", write_css), ("fashion200k", "fashion200k", write_fashion200k),
    ("mit-states", "mit-states", write_mit_states), ("fashioniq", "fashioniq", write_fashioniq),
    ("fashioniq-joined", "fashioniq", write_fashioniq), ("shoes", "shoes", write_shoes),
    ("birds-to-words", "birds-to-words", write_birds_to_words), ("cirr", "cirr", write_cirr),
    ("cirr-subset", "cirr", write_cirr),
]


@pytest.mark.parametrize("name,folder,writer", IMAGE_LOADERS, ids=[n for n, _, _ in IMAGE_LOADERS])
def test_every_image_loader_follows_the_cache_rule(tmp_path, monkeypatch, name, folder, writer):
    monkeypatch.setenv("CIRBENCH_NO_PROGRESS", "1")
    registry = load_registry()
    shared = tmp_path / "cache"

    def build(root):
        return registry.dataset(name).create(SMOKE, shared, DataLocations(root=root))

    first, second = tmp_path / "a", tmp_path / "b"
    writer(first / folder)
    writer(second / folder)
    ds = build(first)
    path0 = ds.path_of(0)
    write_image(second / folder / path0.relative_to(first / folder), seed=999, size=(30, 20))  # copy b differs
    # two copies, one cache folder: each gets its own pixels
    a0, b0 = build(first).images([0]), build(second).images([0])
    assert not torch.equal(a0, b0)
    assert np.array_equal(b0[0].permute(1, 2, 0).numpy(), decode_image(build(second).path_of(0), ds.transform))
    # fixed in place: the next build serves the new pixels
    write_image(path0, seed=999, size=(30, 20))
    assert torch.equal(build(first).images([0]), b0)
    # deleted: the loader's error naming the file (Shoes looks its images up in the folders,
    # so it refuses at loading); MIT-States has no annotation file, its images are the folders'
    # files: the deleted one is no longer in the dataset, and never served
    path0.unlink()
    if name == "mit-states":
        again = build(first)
        assert path0 not in again.index.files and again.num_images == ds.num_images - 1
        assert np.array_equal(again.images([0])[0].permute(1, 2, 0).numpy(),
                              decode_image(again.path_of(0), ds.transform))
        assert len(cache_entries(shared, "images")) == 3  # another image list: another cache
        return
    with pytest.raises((CorruptImageError, AnnotationError), match=re.escape(path0.name)):
        build(first).images([1])
    assert len(cache_entries(shared, "images")) == 2


def test_arrow_cache_records_what_it_was_built_from(tmp_path):
    files = [write_image(tmp_path / "root" / f"{i}.png", i) for i in range(3)]
    c = ArrowImageCache(tmp_path / "c", "toy", 1, ImageTransform(4, "stretch"), [f.name for f in files], files,
                        root=tmp_path / "root")
    assert not c.ready()
    c.images([0])
    assert c.ready() and c.built
    meta = json.loads((c.folder / "meta.json").read_text())
    assert meta["kind"] == "images" and meta["name"] == "toy" and meta["entries"] == 3
    assert meta["built_from"] == os.path.realpath(tmp_path / "root") and meta["sources_hashed"] is True
    assert meta["key"]["root"] == os.path.realpath(tmp_path / "root")
    again = ArrowImageCache(tmp_path / "c", "toy", 1, ImageTransform(4, "stretch"), [f.name for f in files], files,
                            root=tmp_path / "root")
    again.images([1])
    assert not again.built  # opened, not rebuilt
    # a symbolic link to the same root is the same data: same key
    (tmp_path / "link").symlink_to(tmp_path / "root")
    linked = ArrowImageCache(tmp_path / "c", "toy", 1, ImageTransform(4, "stretch"), [f.name for f in files],
                             [tmp_path / "link" / f.name for f in files], root=tmp_path / "link")
    assert linked.folder == c.folder


def test_an_old_format_image_cache_is_listed_and_never_read(tmp_path):
    old = tmp_path / "c" / "images" / "toy-v1-stretch4-0123456789ab"
    old.mkdir(parents=True)
    (old / "meta.json").write_text(json.dumps({"format": 1, "dataset": "toy", "version": "1",
                                               "transform": "stretch4", "num_images": 3}))
    (entry,) = cache_entries(tmp_path / "c")
    assert entry.status == "old format" and entry.name == "toy" and not entry.complete
    assert [e.folder for e in clear_cache(tmp_path / "c", "toy")] == [old] and not old.exists()


# --- the key and the stale rule ---------------------------------------------------------------------------


@settings(max_examples=50, deadline=None)
@given(st.dictionaries(st.sampled_from("abcd"), st.integers(-3, 3) | st.text(max_size=3), max_size=4),
       st.sampled_from("abcd"), st.integers(-3, 3))
def test_key_folder_changes_exactly_when_a_field_changes(fields, k, v):
    a = CacheKey("generated", "toy", fields, "lbl")
    assert CacheKey("generated", "toy", dict(reversed(list(fields.items()))), "lbl").folder("/c") == a.folder("/c")
    changed = {**fields, k: v}
    assert (CacheKey("generated", "toy", changed, "lbl").folder("/c") == a.folder("/c")) == (changed == fields)
    assert CacheKey("images", "toy", fields, "lbl").folder("/c") != a.folder("/c")
    assert a.folder("/c").parent == Path("/c/generated")


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.integers(-1, 3), st.integers(0, 3), st.binary(min_size=16, max_size=16)),
                min_size=1, max_size=5), st.data())
def test_sources_changes_is_none_exactly_for_equal_tables(rows, data):
    stored = np.array(rows, dtype=cache._SOURCE_DTYPE)
    current = stored.copy()
    i = data.draw(st.integers(0, len(rows) - 1))
    field = data.draw(st.sampled_from(["size", "mtime_ns", "digest", None]))
    if field == "digest":
        current[i]["digest"] = b"\x01" * 16 if stored[i]["digest"] != b"\x01" * 16 else b"\x02" * 16
    elif field is not None:
        current[i][field] = stored[i][field] + 1
    src = Sources(Path("/r"), [f"f{j}" for j in range(len(rows))], [Path(f"/r/f{j}") for j in range(len(rows))])
    why = src.changes(stored, current)
    # digests count only when both tables have them (sources over the size limit are not hashed)
    hashed = bool(stored["digest"].any()) and bool(current["digest"].any())
    expect_change = field in ("size", "mtime_ns") or (field == "digest" and hashed)
    assert (why is not None) == expect_change
    if expect_change:
        assert f"/r/f{i}" in why


def test_stat_hashes_small_sources_only(tmp_path, monkeypatch):
    (tmp_path / "a").write_bytes(b"x" * 10)
    (tmp_path / "b").write_bytes(b"y" * 10)
    src = Sources.folder(tmp_path)
    assert src.entries == ["a", "b"]
    table = src.stat()
    assert list(table["size"]) == [10, 10] and table["digest"].all()
    monkeypatch.setattr(cache, "CONTENT_HASH_LIMIT", 19)  # 20 bytes in all: not hashed
    assert not src.stat()["digest"].any()
    (tmp_path / "b").unlink()
    assert src.missing(src.stat()) == [tmp_path / "b"]


# --- generated datasets -------------------------------------------------------------------------------


def _toy_generator(calls: list, seed: int, n: int = 3):
    def generate():
        calls.append(seed)
        images = np.full((n, 2, 2, 3), seed, dtype=np.uint8)
        return images, {"version": 1, "seed": seed, "num_images": n}
    return generate


def test_generated_cache_follows_its_parameters(tmp_path, caplog):
    calls: list = []
    c = tmp_path / "c"
    images, data = cache.load_or_generate(c, "toy", {"version": 1, "seed": 0}, _toy_generator(calls, 0), (2, 2, 3))
    assert calls == [0] and data["seed"] == 0 and int(images[0, 0, 0, 0]) == 0
    cache.load_or_generate(c, "toy", {"version": 1, "seed": 0}, _toy_generator(calls, 0), (2, 2, 3))
    assert calls == [0]  # reused
    # a changed parameter is another cache: generated again, the first kept
    images, _ = cache.load_or_generate(c, "toy", {"version": 1, "seed": 5}, _toy_generator(calls, 5), (2, 2, 3))
    assert calls == [0, 5] and int(images[0, 0, 0, 0]) == 5
    assert len(cache_entries(c, "generated")) == 2
    # a folder whose record says other parameters (e.g. copied over) is stale: regenerated, said so
    folder = cache.generated_key("toy", {"version": 1, "seed": 0}).folder(c)
    meta = json.loads((folder / "meta.json").read_text())
    meta["key"]["seed"] = 5
    (folder / "meta.json").write_text(json.dumps(meta))
    with caplog.at_level(logging.WARNING, logger="cirbench.data.cache"):
        images, _ = cache.load_or_generate(c, "toy", {"version": 1, "seed": 0}, _toy_generator(calls, 0), (2, 2, 3))
    assert calls == [0, 5, 0] and int(images[0, 0, 0, 0]) == 0
    assert "is stale" in caplog.text and "key is" in caplog.text


def test_generated_old_layout_is_listed_and_cleared(tmp_path):
    old = tmp_path / "css-synth-v2-tiny-seed0"  # where format 1 kept it
    old.mkdir()
    np.save(old / "images.npy", np.zeros((1, 2, 2, 3), np.uint8))
    (old / "meta.json").write_text(json.dumps({"generator_version": 2, "num_images": 1}))
    (tmp_path / "unrelated").mkdir()
    (entry,) = cache_entries(tmp_path)
    assert entry.kind == "generated" and entry.status == "old format" and entry.folder == old
    clear_cache(tmp_path, kind="generated")
    assert not old.exists() and (tmp_path / "unrelated").is_dir()


# --- text embeddings ---------------------------------------------------------------------------------


def _model_dir(path: Path, weights: bytes) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text('{"hidden_size": 2}')
    (path / "model.safetensors").write_bytes(weights)
    return path


def _encoder(calls: list, scale: float):
    def compute(texts):
        calls.append(list(texts))
        return torch.tensor([[float(len(t)), scale] for t in texts])
    return compute


def test_text_embeddings_follow_the_encoder_files_and_the_texts(tmp_path, caplog):
    calls: list = []
    c, model = tmp_path / "c", _model_dir(tmp_path / "bert", b"\x01" * 8)
    texts = ["is red", "is blue", "is red"]
    emb, source = cache.load_or_compute_embeddings(c, "toy", "bert:1", model, texts, _encoder(calls, 1.0), 2)
    assert source == "encoder" and calls == [["is blue", "is red"]]  # sorted, unique
    assert emb.tolist() == [[7.0, 1.0], [6.0, 1.0]]
    emb, source = cache.load_or_compute_embeddings(c, "toy", "bert:1", model, texts[::-1], _encoder(calls, 1.0), 2)
    assert source == "disk" and len(calls) == 1
    # weights replaced in place by others of the same size (a fine-tuned copy), time put back
    before = os.stat(model / "model.safetensors")
    (model / "model.safetensors").write_bytes(b"\x02" * 8)
    os.utime(model / "model.safetensors", ns=(before.st_atime_ns, before.st_mtime_ns))
    with caplog.at_level(logging.WARNING, logger="cirbench.data.cache"):
        emb, source = cache.load_or_compute_embeddings(c, "toy", "bert:1", model, texts, _encoder(calls, 2.0), 2)
    assert source == "encoder" and emb[:, 1].tolist() == [2.0, 2.0]
    assert f"{model / 'model.safetensors'}: content changed" in caplog.text
    # other texts: another cache; the same weights elsewhere: another cache
    cache.load_or_compute_embeddings(c, "toy", "bert:1", model, ["is green"], _encoder(calls, 2.0), 2)
    other = shutil.copytree(model, tmp_path / "bert-copy")
    cache.load_or_compute_embeddings(c, "toy", "bert:1", other, texts, _encoder(calls, 2.0), 2)
    assert len(calls) == 4 and len(cache_entries(c, "text-embeddings")) == 3
    (entry,) = [e for e in cache_entries(c, "text-embeddings") if e.entries == 1]
    assert entry.built_from == f"encoder bert:1 at {os.path.realpath(model)}" and entry.label == "bert"


# --- one home: list and clear every kind ----------------------------------------------------------------


def test_data_cache_list_and_clear_every_kind(tmp_path, first_copy, capsys):
    c = tmp_path / "c"
    FashionIQDataset.build(DatasetContext(SMOKE, c, first_copy)).images([0])
    cache.load_or_generate(c, "css-synth", {"version": 1, "seed": 0}, _toy_generator([], 0), (2, 2, 3))
    cache.load_or_compute_embeddings(c, "fashioniq", "bert:1", _model_dir(tmp_path / "bert", b"w"), ["a"],
                                     _encoder([], 1.0), 2)
    assert main(["data", "cache", "list", "--cache-dir", str(c)]) == 0
    out = capsys.readouterr().out
    assert os.path.realpath(first_copy) in out  # the data root the images came from
    assert "version=1, seed=0" in out  # the generator's parameters
    assert f"encoder bert:1 at {os.path.realpath(tmp_path / 'bert')}" in out
    assert "3 cache(s)" in out
    assert main(["data", "cache", "list", "--kind", "generated", "--cache-dir", str(c)]) == 0
    out = capsys.readouterr().out
    assert "css-synth" in out and "fashioniq" not in out and "1 cache(s)" in out

    assert main(["data", "cache", "clear", "fashioniq", "--kind", "text-embeddings", "--cache-dir", str(c)]) == 0
    assert "1 text-embeddings cache(s) of fashioniq removed" in capsys.readouterr().out
    assert sorted(e.kind for e in cache_entries(c)) == ["generated", "images"]
    assert main(["data", "cache", "clear", "fashioniq", "--cache-dir", str(c)]) == 0
    assert [e.kind for e in cache_entries(c)] == ["generated"]
    assert main(["data", "cache", "clear", "--kind", "generated", "--cache-dir", str(c)]) == 0
    assert cache_entries(c) == []
    assert main(["data", "cache", "clear", "nope", "--cache-dir", str(c)]) == 2


# --- atomic folder writes --------------------------------------------------------------------------------


def test_atomic_write_folder(tmp_path):
    target = tmp_path / "f"

    def fail(tmp):
        (tmp / "half").write_text("x")
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError):
        atomic_write_folder(target, fail)
    assert list(tmp_path.iterdir()) == []  # nothing half-written, no temporary folder left
    assert atomic_write_folder(target, lambda tmp: (tmp / "a").write_text("1"))
    # an existing folder is kept when valid, replaced otherwise
    assert not atomic_write_folder(target, lambda tmp: (tmp / "b").write_text("2"), keep_existing=lambda p: True)
    assert sorted(p.name for p in target.iterdir()) == ["a"]
    assert atomic_write_folder(target, lambda tmp: (tmp / "b").write_text("2"))
    assert sorted(p.name for p in target.iterdir()) == ["b"] and [p.name for p in tmp_path.iterdir()] == ["f"]
