"""Tests of the fashion-synth dataset plugin: determinism, the cache, captions (length spread,
every change mentioned), pairs (1-3 attributes, one category), FashionIQ-style per-category
galleries with identity hits, image size, and the conformance suite."""

from __future__ import annotations

import dataclasses
import re

import numpy as np
import pytest
import torch

import cirbench_fashion_synth
import cirbench_fashion_synth.dataset as fs_dataset
from cirbench import DatasetContext
from cirbench.plugins import load_registry
from cirbench.protocol import BUILTIN_PROTOCOLS
from cirbench.testing import parametrize_with_checks
from cirbench_fashion_synth import (
    CATEGORIES,
    FashionSynthDataset,
    Product,
    build,
    generate,
    mention_options,
    render_product,
)
from cirbench_fashion_synth.captions import COLOR_WORDS, PATTERN_ADJ, PATTERN_NOUN, make_caption
from cirbench_fashion_synth.generator import GEN_VERSION, caption_statistics
from cirbench_fashion_synth.products import BACKGROUND, COLORS, PATTERNS, all_products

# tiny tensors: one torch thread is as fast on a quiet machine and much faster on a busy one
pytestmark = pytest.mark.usefixtures("one_torch_thread")

SMOKE = next(p for p in BUILTIN_PROTOCOLS if p.name == "smoke")


@pytest.fixture(scope="module")
def small() -> tuple[np.ndarray, dict]:
    """The default (``small``) scale at seed 0, 64 px: generated once for the module."""
    return generate("small", 0, 64)


@pytest.fixture(scope="module")
def ds(tmp_path_factory: pytest.TempPathFactory) -> FashionSynthDataset:
    return build(DatasetContext(SMOKE, tmp_path_factory.mktemp("fs-cache")))


def _texts(meta: dict) -> list[str]:
    return [r["text"] for r in meta["triplets"] + meta["queries"]]


def _sentences(text: str) -> int:
    return len([s for s in re.split(r"(?<=[.!?])\s+", text.strip()) if s])


# ------------------------------------------------------------------ determinism


def test_same_seed_same_images_and_captions():
    a_images, a_meta = generate("tiny", 3, 64)
    b_images, b_meta = generate("tiny", 3, 64)
    assert np.array_equal(a_images, b_images)
    assert a_meta == b_meta
    assert _texts(a_meta) and _texts(a_meta) == _texts(b_meta)


def test_different_seeds_differ():
    a_images, a_meta = generate("tiny", 0, 64)
    b_images, b_meta = generate("tiny", 1, 64)
    assert a_meta["products"] != b_meta["products"]
    assert _texts(a_meta) != _texts(b_meta)
    n = min(len(a_images), len(b_images))
    assert not np.array_equal(a_images[:n], b_images[:n])


def test_generation_at_small_is_fast_enough_to_be_the_default(small):
    images, meta = small
    assert len(images) == meta["num_images"] > 1000
    assert len(meta["triplets"]) == 6 * 300 * 2 and len(meta["queries"]) == 6 * 60 * 2


# ------------------------------------------------------------------ cache


def test_cache_is_written_once_and_reused(tmp_path, monkeypatch):
    calls = []
    real = fs_dataset.generate

    def counting(*args, **kwargs):
        calls.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(fs_dataset, "generate", counting)
    first = build(DatasetContext(SMOKE, tmp_path))
    assert calls == [("tiny", 0, 64)]
    folder = fs_dataset.cache_folder(tmp_path, "tiny", 0, 64)
    assert folder.parent == tmp_path / "generated"
    assert folder.name.startswith(f"fashion-synth-v{GEN_VERSION}-tiny-64px-seed0-")
    assert sorted(p.name for p in folder.parent.iterdir()) == [folder.name]  # no temporary folder left
    assert sorted(p.name for p in folder.iterdir()) == ["data.json", "images.npy", "meta.json"]
    mtimes = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}

    second = build(DatasetContext(SMOKE, tmp_path))
    assert len(calls) == 1, "regenerated although the cache is valid"
    assert {p.name: p.stat().st_mtime_ns for p in folder.iterdir()} == mtimes
    assert torch.equal(first.images(range(first.num_images)), second.images(range(second.num_images)))
    assert first.queries() == second.queries() and first.train_triplets() == second.train_triplets()

    # another image size is another cache entry; a damaged entry is regenerated
    build(DatasetContext(dataclasses.replace(SMOKE, image_size=32), tmp_path))
    assert calls[-1] == ("tiny", 0, 32) and len(calls) == 2
    (folder / "data.json").write_text("{broken")
    third = build(DatasetContext(SMOKE, tmp_path))
    assert len(calls) == 3 and third.queries() == first.queries()


def test_no_cache_dir_generates_in_memory(ds):
    d = build(DatasetContext(SMOKE, None))
    assert d.num_images == ds.num_images and d.queries() == ds.queries()


# ------------------------------------------------------------------ pairs and captions


def test_pairs_change_one_to_three_attributes_within_a_category(small):
    images, meta = small
    products = [Product.from_list(p) for p in meta["products"]]
    counts = {1: 0, 2: 0, 3: 0}
    for r in meta["triplets"] + meta["queries"]:
        ref, tgt = products[r["reference"]], products[r["target"]]
        assert ref.category == tgt.category == r["group"]
        changed = ref.changed(tgt)
        assert changed == r["changed"] and 1 <= len(changed) <= 3
        counts[len(changed)] += 1
    total = sum(counts.values())
    assert all(c > total / 5 for c in counts.values()), counts  # each k is common


def test_every_changed_attribute_is_mentioned(small):
    _, meta = small
    products = [Product.from_list(p) for p in meta["products"]]
    for r in meta["triplets"] + meta["queries"]:
        ref, tgt = products[r["reference"]], products[r["target"]]
        text = r["text"].lower()
        mentioned = {m["attribute"] for m in r["mentions"]}
        assert mentioned == set(r["changed"]), r
        for m in r["mentions"]:
            assert m["phrase"].lower() in text, (m, r["text"])
            assert (m["phrase"], m["form"]) in mention_options(m["attribute"], ref, tgt), (m, r["text"])
            # independent of mention_options: colour words name the target's colour, pattern
            # words the target's pattern (or negate the reference's when the target is plain)
            if m["attribute"] == "color":
                assert m["phrase"] in COLOR_WORDS[tgt.color]
            elif m["attribute"] == "pattern" and m["form"] == "neg":
                assert tgt.pattern == "plain" and m["phrase"] in PATTERN_ADJ[ref.pattern]
                assert re.search(r"\b(not|no longer|isn't|don't)\b", text), r["text"]
            elif m["attribute"] == "pattern":
                assert m["phrase"] in PATTERN_ADJ[tgt.pattern] + PATTERN_NOUN[tgt.pattern]


def test_shape_comparatives_point_the_right_way():
    rng = np.random.default_rng(0)
    short, long_ = Product("dress", "red", "plain", "short"), Product("dress", "red", "plain", "long")
    flat, high = Product("shoe", "black", "plain", "flat"), Product("shoe", "black", "plain", "high")
    seen = set()
    for _ in range(200):
        for ref, tgt, wrong in ((short, long_, "shorter"), (long_, short, "longer"),
                                (flat, high, "lower"), (high, flat, "higher")):
            text, _, mentions = make_caption(rng, ref, tgt)
            assert wrong not in text.lower(), text
            seen.add(mentions[0].phrase)
    assert {"longer sleeves", "shorter sleeves", "a higher heel", "long sleeves", "no heel"} <= seen


def test_caption_lengths_spread_from_a_few_words_to_a_few_sentences(small):
    _, meta = small
    texts = _texts(meta)
    words = np.array([len(t.split()) for t in texts])
    long_ = [t for t in texts if _sentences(t) >= 3 or len(t.split()) >= 25]
    assert (words <= 5).mean() > 0.15 and len(long_) / len(texts) > 0.1
    assert words.min() <= 2 and words.max() >= 30
    feedback = [r["text"] for r in meta["triplets"] if r["style"] == "feedback"]
    assert feedback and all(_sentences(t) >= 3 for t in feedback)
    # feedback also names what stays the same
    assert sum("keep" in t.lower() or "stay" in t.lower() or "leave" in t.lower() for t in feedback) > len(feedback) / 2
    # many templates and synonyms: several words per colour used, hundreds of distinct texts
    red_words = {w for w in COLOR_WORDS["red"] if any(w in t.lower() for t in texts)}
    assert len(red_words) >= 3
    assert len(set(texts)) > 0.8 * len(texts)
    assert {r["style"] for r in meta["queries"]} == {"terse", "relative", "imperative", "feedback"}


def test_readme_caption_statistics_are_current(small):
    """The numbers the plugin's README and docstring quote (scale small, seed 0)."""
    stats = caption_statistics(small[1])
    assert stats["captions"] == 4320
    assert stats["words_min_median_mean_max"] == [1, 8.0, 10.7, 35]
    assert (stats["share_at_most_5_words"], stats["share_at_least_25_words"]) == (0.331, 0.109)
    assert stats["per_style_min_median_max"] == {
        "feedback": [17, 25.0, 35], "imperative": [2, 9.0, 19], "relative": [2, 8.0, 19], "terse": [1, 4.0, 12]}
    assert stats["distinct_words"] == 230
    assert stats["captions_per_changed_count"] == {1: 1456, 2: 1408, 3: 1456}


def test_tiny_scale_has_short_and_long_captions(ds):
    words = [len(q.text.split()) for q in ds.queries()] + [len(t.text.split()) for t in ds.train_triplets()]
    assert min(words) <= 5 and max(words) >= 25


# ------------------------------------------------------------------ evaluation rules


def test_groups_are_categories_with_their_own_galleries(ds):
    assert ds.has_group_galleries()
    assert ds.base_loss == "batch_classification"
    assert {q.group for q in ds.queries()} == set(CATEGORIES)
    test = set(ds.gallery().tolist())
    union: set[int] = set()
    for cat in CATEGORIES:
        g = ds.gallery(cat)
        assert len(g) and {ds.product(int(i)).category for i in g} == {cat}
        assert not union & set(g.tolist())
        union |= set(g.tolist())
    assert union == test
    with pytest.raises(KeyError, match="no gallery 'hat'"):
        ds.gallery("hat")


def test_identity_targets_in_their_category_gallery(small):
    images, meta = small
    d = FashionSynthDataset(images, meta)
    train = set(d.train_ids.tolist())
    for q in d.queries():
        assert len(q.targets) == 1
        (t,) = q.targets
        assert t in set(d.gallery(q.group).tolist()) and q.reference in set(d.gallery(q.group).tolist())
        assert d.product(t).category == q.group and t not in train
    # identity == attribute match: no two images of a split show the same product
    for ids in (d.train_ids, d.test_ids):
        prods = [d.product(int(i)) for i in ids]
        assert len(set(prods)) == len(prods)
    assert not {d.product(int(i)) for i in d.train_ids} & {d.product(int(i)) for i in d.test_ids}
    assert all(len(d.gallery(c)) == 86 for c in CATEGORIES)  # the whole test pool at small


# ------------------------------------------------------------------ images


@pytest.mark.parametrize("size", [64, 32, 96])
def test_images_have_the_protocols_size(tmp_path, size):
    d = build(DatasetContext(dataclasses.replace(SMOKE, image_size=size), tmp_path))
    ids = [0, d.num_images - 1, int(d.gallery("boot")[0])]
    out = d.images(ids)
    assert out.dtype == torch.uint8 and tuple(out.shape) == (3, 3, size, size)
    with pytest.raises(IndexError):
        d.images([d.num_images])


def test_drawings_show_colour_pattern_and_shape():
    base = Product("tshirt", "red", "plain", "short")
    img = render_product(base)
    assert img.shape == (64, 64, 3) and img.dtype == np.uint8
    assert tuple(img[0, 0]) == BACKGROUND and tuple(img[40, 32]) == COLORS["red"]
    # every attribute value changes the picture
    for attribute, values in (("color", COLORS), ("pattern", PATTERNS), ("shape", CATEGORIES["tshirt"].shape_values)):
        pics = [render_product(dataclasses.replace(base, **{attribute: v})) for v in values]
        for i in range(len(pics)):
            for j in range(i + 1, len(pics)):
                assert not np.array_equal(pics[i], pics[j]), (attribute, i, j)
    # longer shape values cover more pixels, in every category
    for cat in CATEGORIES.values():
        area = [(render_product(Product(cat.name, "black", "plain", v)) != BACKGROUND).any(-1).sum()
                for v in cat.shape_values]
        assert area == sorted(area) and area[0] < area[-1], (cat.name, area)
    assert len(all_products("dress")) == 12 * 6 * 4


# ------------------------------------------------------------------ plugin


def test_registered_by_entry_point():
    spec = load_registry().dataset("fashion-synth")
    assert spec.build is build
    assert cirbench_fashion_synth.cirbench_datasets()[0].name == "fashion-synth"


@parametrize_with_checks(datasets=["fashion-synth"])
def test_conformance(name, check):
    check(name)
