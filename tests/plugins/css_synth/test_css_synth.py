"""Tests of the css-synth dataset plugin: TIRG's 2D renderer, CSS-style modifications,
label-based hits, splits, the cache and TIRG's CSS training sampler (docs/papers.md §1.1)."""

from __future__ import annotations

import importlib.metadata as md
import json
import re

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import cirbench_css_synth
import cirbench_css_synth.cache as css_cache
from cirbench import CIRDataset, DatasetContext, Protocol, Query, Triplet
from cirbench.plugins import load_registry
from cirbench.protocol import BUILTIN_PROTOCOLS
from cirbench_css_synth import CssSynthDataset, build, render_scene
from cirbench_css_synth.generator import (
    CENTRES,
    COLORS,
    GEN_VERSION,
    POSITIONS,
    SHAPES,
    SIZES,
    SceneObject,
    apply_modification,
    generate,
    make_scene,
    random_modification,
    random_scene,
    scene_key,
)

SMOKE = next(p for p in BUILTIN_PROTOCOLS if p.name == "smoke")
WHITE = np.array([255, 255, 255], dtype=np.uint8)


@pytest.fixture(scope="module")
def tiny() -> tuple[np.ndarray, dict]:
    return generate("tiny", 0)


@pytest.fixture(scope="module")
def ds(tmp_path_factory: pytest.TempPathFactory) -> CssSynthDataset:
    return build(DatasetContext(SMOKE, tmp_path_factory.mktemp("cache")))


# ------------------------------------------------------------------ TIRG's renderer


def tirg_reference(objects: list[dict]) -> np.ndarray:
    """A literal transcription of TIRG's ``generate_2d_image`` (float canvas, [0, 1])."""
    img = np.ones((64, 64, 3))
    for obj in objects:
        s = 4.0
        if obj["size"] == "large":
            s *= 2
        c = [v / 255.0 for v in COLORS[obj["color"]]]
        y = obj["pos"][0] * img.shape[0]
        x = obj["pos"][1] * img.shape[1]
        if obj["shape"] == "rectangle":
            img[int(y - s) : int(y + s), int(x - s) : int(x + s), :] = c
        if obj["shape"] == "circle":
            for y0 in range(int(y - s), int(y + s) + 1):
                x0 = x + (abs(y0 - y) - s)
                x1 = 2 * x - x0
                img[y0, int(x0) : int(x1), :] = c
        if obj["shape"] == "triangle":
            for y0 in range(int(y - s), int(y + s)):
                x0 = x + (y0 - y + s) / 2
                x1 = 2 * x - x0
                x0, x1 = min(x0, x1), max(x0, x1)
                img[y0, int(x0) : int(x1), :] = c
    return np.rint(img * 255).astype(np.uint8)


def painted(img: np.ndarray) -> np.ndarray:
    return np.any(img != WHITE, axis=-1)


def row_widths(mask: np.ndarray) -> dict[int, int]:
    return {int(r): int(mask[r].sum()) for r in np.nonzero(mask.any(axis=1))[0]}


def test_small_red_cube_paints_exact_square():
    img = render_scene([SceneObject(0, "cube", "red", "small")])  # centre (12.8, 12.8), s=4
    assert img.dtype == np.uint8 and img.shape == (64, 64, 3)
    expected = np.zeros((64, 64), dtype=bool)
    expected[8:16, 8:16] = True
    np.testing.assert_array_equal(painted(img), expected)
    assert (img[expected] == COLORS["red"]).all()
    assert (img[~expected] == 255).all()


def test_large_doubles_half_size():
    small = painted(render_scene([SceneObject(4, "cube", "blue", "small")]))
    large = painted(render_scene([SceneObject(4, "cube", "blue", "large")]))
    exp_small = np.zeros((64, 64), bool)
    exp_small[28:36, 28:36] = True
    exp_large = np.zeros((64, 64), bool)
    exp_large[24:40, 24:40] = True
    np.testing.assert_array_equal(small, exp_small)
    np.testing.assert_array_equal(large, exp_large)


def test_sphere_is_diamond():
    mask = painted(render_scene([SceneObject(4, "sphere", "green", "small")]))
    # rows 28..36 inclusive; first and last rows are empty; widths 2(4 - |y0 - 32|)
    assert row_widths(mask) == {29: 2, 30: 4, 31: 6, 32: 8, 33: 6, 34: 4, 35: 2}
    assert np.nonzero(mask[32])[0].tolist() == list(range(28, 36))
    large = painted(render_scene([SceneObject(4, "sphere", "green", "large")]))
    assert row_widths(large) == {y: 2 * (8 - abs(y - 32)) for y in range(25, 40)}
    np.testing.assert_array_equal(large, large[:, ::-1])  # symmetric about x = 32


def test_cylinder_is_upward_triangle():
    mask = painted(render_scene([SceneObject(4, "cylinder", "cyan", "small")]))
    assert row_widths(mask) == {29 + k: k + 1 for k in range(7)}  # narrow at the top
    assert np.nonzero(mask[35])[0].tolist() == list(range(28, 35))
    large = painted(render_scene([SceneObject(4, "cylinder", "cyan", "large")]))
    assert row_widths(large) == {24 + k: k for k in range(1, 16)}


def test_tirg_shape_names_and_dicts_render_alike():
    ours = [
        SceneObject(2, "cylinder", "purple", "large"),
        SceneObject(6, "sphere", "gray", "small"),
    ]
    theirs = [
        {"shape": "triangle", "color": "purple", "size": "large", "pos": (0.2, 0.8)},
        {"shape": "circle", "color": "gray", "size": "small", "pos": (0.8, 0.2)},
    ]
    np.testing.assert_array_equal(render_scene(ours), render_scene(theirs))


def test_render_rejects_unknown_attributes():
    with pytest.raises(ValueError, match="colour"):
        render_scene([{"shape": "cube", "color": "pink", "size": "small", "pos": (0.5, 0.5)}])
    with pytest.raises(ValueError, match="shape"):
        render_scene([{"shape": "cone", "color": "red", "size": "small", "pos": (0.5, 0.5)}])


tirg_objects = st.lists(
    st.fixed_dictionaries(
        {
            "shape": st.sampled_from(["rectangle", "circle", "triangle"]),
            "color": st.sampled_from(sorted(COLORS)),
            "size": st.sampled_from(SIZES),
            "pos": st.tuples(
                st.floats(0.15, 0.85) | st.sampled_from(CENTRES),
                st.floats(0.15, 0.85) | st.sampled_from(CENTRES),
            ),
        }
    ),
    max_size=6,
)


@settings(max_examples=60, deadline=None)
@given(tirg_objects)
def test_render_matches_tirg_transcription(objects):
    """Overlapping objects included: painted in list order, exactly as TIRG's code."""
    np.testing.assert_array_equal(render_scene(objects), tirg_reference(objects))


# ------------------------------------------------------------------ determinism


def test_same_seed_is_bit_identical_other_seed_differs(tiny):
    images, meta = tiny
    images2, meta2 = generate("tiny", 0)
    assert images.tobytes() == images2.tobytes()
    assert meta == meta2
    images3, meta3 = generate("tiny", 1)
    assert images3.shape != images.shape or images3.tobytes() != images.tobytes()
    assert meta3["labels"] != meta["labels"]


def test_images_are_renders_of_their_scenes(tiny):
    images, meta = tiny
    for i in range(0, len(images), 7):
        scene = [SceneObject.from_list(o) for o in meta["scenes"][i]]
        np.testing.assert_array_equal(images[i], render_scene(scene))


# ------------------------------------------------------------------ modifications

COLOR = "|".join(COLORS)
SHAPE = "|".join(SHAPES)
SIZE = "|".join(SIZES)
POS = "|".join(POSITIONS)
ADD_RE = re.compile(rf"^(?:add|place) ({SIZE}) ({COLOR}) ({SHAPE}) (?:to|at) ({POS})$")
REMOVE_RE = re.compile(rf"^(?:remove|delete|take away) ({COLOR}) ({SHAPE})(?: at ({POS}))?$")
CHANGE_RE = re.compile(
    rf"^(?:make ({POS}) ({SIZE}) ({COLOR}) object|change ({POS}) ({SIZE}) ({COLOR}) object to) "
    rf"({COLOR}|{SIZE}|{SHAPE})$"
)


def apply_text(scene, text: str, group: str):
    """An independent reading of a modification text: the scene it asks for."""
    objs = {o.cell: o for o in scene}
    if group == "add":
        m = ADD_RE.match(text)
        assert m, text
        size, color, shape, pos = m.groups()
        cell = POSITIONS.index(pos)
        assert cell not in objs, text
        objs[cell] = SceneObject(cell, shape, color, size)
    elif group == "remove":
        m = REMOVE_RE.match(text)
        assert m, text
        color, shape, pos = m.groups()
        hits = [
            o for o in objs.values()
            if o.color == color and o.shape == shape and (pos is None or o.position == pos)
        ]
        assert len(hits) == 1, f"{text!r} is ambiguous in {scene}"
        del objs[hits[0].cell]
    else:
        m = CHANGE_RE.match(text)
        assert m, text
        g = m.groups()
        pos, size, color = g[0:3] if g[0] else g[3:6]
        value = g[6]
        o = objs[POSITIONS.index(pos)]
        assert (o.size, o.color) == (size, color), text
        fields = dict(cell=o.cell, shape=o.shape, color=o.color, size=o.size)
        attr = "color" if value in COLORS else "size" if value in SIZES else "shape"
        fields[attr] = value
        objs[o.cell] = SceneObject(**fields)
    return make_scene(objs.values())


def test_queries_groups_texts_and_recorded_modifications(ds):
    queries = ds.queries()
    mods = ds.query_modifications()
    assert {q.group for q in queries} == {"add", "remove", "change"}
    for q, mod in zip(queries, mods):
        assert isinstance(q, Query)
        assert q.group == mod.kind and q.text == mod.text
        src = ds.scene(q.reference)
        true_target = next(t for t in q.targets if ds.scene(t) == apply_modification(src, mod))
        assert apply_text(src, q.text, q.group) == ds.scene(true_target)
        assert ds.scene(true_target) != src


def test_triplets_follow_their_modifications(ds):
    for t, mod in zip(ds.train_triplets(), ds.triplet_modifications()):
        assert isinstance(t, Triplet)
        src = ds.scene(t.reference)
        assert apply_modification(src, mod) == ds.scene(t.target)
        assert apply_text(src, t.text, mod.kind) == ds.scene(t.target)


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 2**32 - 1), st.sampled_from(["add", "remove", "change", None]))
def test_random_modification_text_names_its_target(seed, kind):
    rng = np.random.default_rng(seed)
    scene = random_scene(rng, max_objects=int(rng.integers(1, 9)))
    if kind == "remove" and len(scene) < 2:
        with pytest.raises(ValueError):
            random_modification(rng, scene, kind)
        return
    mod = random_modification(rng, scene, kind)
    target = apply_modification(scene, mod)
    assert target != scene and len(target) >= 1
    assert kind is None or mod.kind == kind
    assert apply_text(scene, mod.text, mod.kind) == target


def test_remove_names_position_only_when_ambiguous():
    rng = np.random.default_rng(0)
    twins = make_scene([SceneObject(0, "sphere", "yellow", "small"),
                        SceneObject(8, "sphere", "yellow", "large")])
    single = make_scene([SceneObject(0, "sphere", "yellow", "small"),
                         SceneObject(8, "cube", "yellow", "large")])
    for _ in range(20):
        m = random_modification(rng, twins, "remove")
        assert m.text.endswith(f" yellow sphere at {POSITIONS[m.cell]}")
        m = random_modification(rng, single, "remove")
        assert " at " not in m.text


# ------------------------------------------------------------------ labels and splits


def test_labels_are_scene_identity(ds):
    by_label: dict[str, set] = {}
    for i in range(ds.num_images):
        scene = ds.scene(i)
        assert ds.labels[i] == scene_key(scene)
        by_label.setdefault(ds.labels[i], set()).add(scene)
    assert all(len(s) == 1 for s in by_label.values())
    # identical labels give identical pixels
    imgs = ds.images(range(ds.num_images))
    first: dict[str, int] = {}
    for i, lab in enumerate(ds.labels):
        j = first.setdefault(lab, i)
        assert torch.equal(imgs[i], imgs[j])


def check_label_based_targets(ds: CssSynthDataset) -> None:
    gallery = ds.gallery()
    gallery_set = set(gallery.tolist())
    labels = np.array(ds.labels)
    for q, mod in zip(ds.queries(), ds.query_modifications()):
        target_scene = apply_modification(ds.scene(q.reference), mod)
        label = scene_key(target_scene)
        expected = {int(g) for g in gallery if labels[g] == label}
        assert set(q.targets) == expected and len(q.targets) == len(expected)
        assert set(q.targets) <= gallery_set
        assert any(ds.scene(t) == target_scene for t in q.targets)


def test_label_based_targets(ds):
    check_label_based_targets(ds)


def test_label_based_targets_with_duplicate_scenes():
    # seed 1 at tiny (generator v2) happens to repeat target scenes inside the test split
    ds = CssSynthDataset(*generate("tiny", 1))
    check_label_based_targets(ds)
    multi = [q for q in ds.queries() if len(q.targets) > 1]
    assert multi
    for q in multi:
        imgs = ds.images(q.targets)
        assert all(torch.equal(imgs[0], im) for im in imgs)


def test_splits_are_disjoint(ds):
    train, test = set(ds.train_ids.tolist()), set(ds.test_ids.tolist())
    assert not train & test
    assert train | test == set(range(ds.num_images))
    assert max(train) < min(test)  # train images first
    assert gallery_is(ds.gallery(), ds.test_ids)
    assert gallery_is(ds.gallery("add"), ds.test_ids)
    for t in ds.train_triplets():
        assert t.reference in train and t.target in train
    for q in ds.queries():
        assert q.reference in test
    train_labels = {ds.labels[i] for i in train}
    test_sources = {ds.labels[i] for i in ds.test_sources.tolist()}
    assert not test_sources & train_labels
    assert len(set(ds.labels[i] for i in ds.train_sources.tolist())) == len(ds.train_sources)


def gallery_is(g: np.ndarray, ids: np.ndarray) -> bool:
    return g.dtype == np.int64 and np.array_equal(g, ids)


def test_tiny_sizes(ds):
    d = ds.describe()
    # tiny: 40 train and 30 test sources, five modifications each (CSS's 16k / 19k ratio)
    assert d["num_images"] == (40 + 30) * 6 and d["num_train_triplets"] == 40 * 5
    assert d["num_queries"] == 30 * 5 and d["gallery_size"] == 30 * 6
    assert set(d["queries_per_group"]) == {"add", "remove", "change"}
    assert d["base_loss"] == "soft_triplet" and ds.name == "css-synth"
    assert isinstance(ds, CIRDataset)


# ------------------------------------------------------------------ images()


def test_images_dtype_shape_and_content(ds):
    ids = [0, 5, ds.num_images - 1]
    x = ds.images(ids)
    assert x.dtype == torch.uint8 and tuple(x.shape) == (3, 3, 64, 64) and x.is_contiguous()
    for row, i in zip(x, ids):
        expect = torch.from_numpy(render_scene(ds.scene(i))).permute(2, 0, 1)
        assert torch.equal(row, expect)
    assert tuple(ds.images(np.array([], dtype=np.int64)).shape) == (0, 3, 64, 64)
    with pytest.raises(IndexError):
        ds.images([ds.num_images])


def test_images_resized_to_protocol_size(ds, tmp_path):
    proto = Protocol(
        name="t32", version=1, description="", dataset_scale="tiny", backbone="resnet18",
        pretrained=False, image_size=32, embed_dim=8, batch_size=2, iterations=1,
    )
    small = build(DatasetContext(proto, tmp_path))
    x = small.images([0, 1])
    assert x.dtype == torch.uint8 and tuple(x.shape) == (2, 3, 32, 32)
    # the same picture as PIL's antialiased bilinear resize of the 64-px image, within rounding
    from PIL import Image

    for row, i in zip(x, [0, 1]):
        pil = Image.fromarray(render_scene(ds.scene(i))).resize((32, 32), Image.BILINEAR)
        ref = torch.from_numpy(np.array(pil)).permute(2, 0, 1)
        assert (row.int() - ref.int()).abs().max() <= 1


# ------------------------------------------------------------------ sampler


def test_sample_triplets_tirg_pairs(ds):
    a = ds.sample_triplets(np.random.default_rng(3), 64)
    b = ds.sample_triplets(np.random.default_rng(3), 64)
    assert a == b and len(a) == 64
    train = set(ds.train_triplets())
    assert all(t in train for t in a)
    for first, second in zip(a[0::2], a[1::2]):
        assert first.reference == second.reference
        assert first.text != second.text and first.target != second.target
    c = ds.sample_triplets(np.random.default_rng(4), 64)
    assert c != a
    assert len(ds.sample_triplets(np.random.default_rng(0), 5)) == 5


# ------------------------------------------------------------------ cache


def test_cache_is_written_atomically_and_reused(tmp_path, monkeypatch):
    first = build(DatasetContext(SMOKE, tmp_path))
    folder = css_cache.cache_folder(tmp_path, "tiny", 0)
    assert folder.parent == tmp_path / "generated" and folder.name.startswith(f"css-synth-v{GEN_VERSION}-tiny-seed0-")
    assert sorted(p.name for p in folder.parent.iterdir()) == [folder.name]  # no temp folders left
    assert sorted(p.name for p in folder.iterdir()) == ["data.json", "images.npy", "meta.json"]
    mtimes = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}

    def boom(*a, **k):
        raise AssertionError("regenerated although the cache is valid")

    monkeypatch.setattr(css_cache, "generate", boom)
    second = build(DatasetContext(SMOKE, tmp_path))
    assert {p.name: p.stat().st_mtime_ns for p in folder.iterdir()} == mtimes
    n = first.num_images
    assert torch.equal(first.images(range(n)), second.images(range(n)))
    assert first.queries() == second.queries() and first.train_triplets() == second.train_triplets()


@pytest.mark.parametrize("damage", ["missing_images", "truncated_images", "short_images",
                                    "bad_json", "other_version", "empty_folder", "bad_record"])
def test_corrupt_cache_is_regenerated(tmp_path, damage):
    good = build(DatasetContext(SMOKE, tmp_path))
    folder = css_cache.cache_folder(tmp_path, "tiny", 0)
    images_file, meta_file = folder / "images.npy", folder / "data.json"
    if damage == "missing_images":
        images_file.unlink()
    elif damage == "truncated_images":
        images_file.write_bytes(images_file.read_bytes()[:1000])
    elif damage == "short_images":
        np.save(images_file, np.load(images_file)[:-1])
    elif damage == "bad_json":
        meta_file.write_text("{not json")
    elif damage == "other_version":
        meta = json.loads(meta_file.read_text())
        meta["generator_version"] = -1
        meta_file.write_text(json.dumps(meta))
    elif damage == "bad_record":
        (folder / "meta.json").write_text("{not json")
    else:
        images_file.unlink()
        meta_file.unlink()
    again = build(DatasetContext(SMOKE, tmp_path))
    assert torch.equal(good.images(range(good.num_images)), again.images(range(again.num_images)))
    assert again.queries() == good.queries()
    assert sorted(p.name for p in folder.parent.iterdir()) == [folder.name]
    np.load(images_file)  # rewritten and readable
    assert json.loads(meta_file.read_text())["generator_version"] == GEN_VERSION


def test_no_cache_dir_generates_in_memory(ds):
    d = build(DatasetContext(SMOKE, None))
    assert d.num_images == ds.num_images and d.queries() == ds.queries()


def test_unknown_scale_is_a_clear_error():
    with pytest.raises(ValueError, match="dataset_scale"):
        generate("huge", 0)


# ------------------------------------------------------------------ plugin


def test_plugin_registers_dataset():
    eps = [ep for ep in md.entry_points(group="cirbench") if ep.name == "css-synth"]
    assert len(eps) == 1
    reg = load_registry(entry_points=eps)
    spec = reg.dataset("css-synth")
    assert spec.build is cirbench_css_synth.build and spec.description
