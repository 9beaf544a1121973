"""The css and css-2d loaders on tiny fixtures written in the canonical layout (from
test_local_data.py, split by issue 12)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cirbench.data import AnnotationError, DataLocations
from cirbench.data.verify import verify_dataset
from tests.fixtures.local_data import css_content
from tests.fixtures.local_loaders import REGISTRY, build
from tests.fixtures.local_loaders import _quiet, data_root  # noqa: F401  (pytest fixtures)


def test_verify_css_lists_images_from_the_npy(data_root):
    (data_root / "css" / "images" / "css_test_000003.png").unlink()
    report = verify_dataset(REGISTRY.dataset("css"), DataLocations(root=data_root))
    assert report.images_listed == 12 and report.images_ok == 11
    (problem,) = report.problems
    assert problem.path.endswith("images/css_test_000003.png") and "missing" in problem.message


# --- loaders -------------------------------------------------------------------------------------------
def test_css_file_is_a_python2_pickle(data_root):
    from cirbench_css.reader import CSS_FILE, read_css_file

    raw = (data_root / "css" / CSS_FILE).read_bytes()
    assert b"U\x05train" in raw  # SHORT_BINSTRING: a Python 2 byte string
    splits = read_css_file(data_root / "css" / CSS_FILE)
    assert splits["train"].objects[0] == [{"color": "red", "shape": "rectangle", "size": "large", "pos": (0.2, 0.2)}]
    assert splits["test"].captions == ["10", "11", "12", "13", "14", "14"]


def test_css_records_follow_tirg(data_root):
    ds = build("css", data_root, None)
    content = css_content()
    assert ds.num_images == 12
    assert len(ds.train_triplets()) == sum(len(m["from"]) for m in content["train"]["mods"])
    qs = ds.queries()
    assert [(q.reference, q.targets, q.group) for q in qs] == [
        (6, (7,), "add"), (7, (8,), "add"), (9, (10, 11), "remove"), (8, (10, 11), "change")]
    # label-based hits: queries 2 and 3 target test images 4 and 5, which share label 14
    assert ds.gallery().tolist() == list(range(6, 12))
    img = ds.images([0])
    assert img.shape == (1, 3, 64, 64) and img.dtype == torch.uint8
    # TIRG's sampler: an odd position reuses the previous source with a different modification
    s = ds.sample_triplets(np.random.default_rng(0), 200)
    assert set(s) <= set(ds.train_triplets())
    for a, b in zip(s[0::2], s[1::2]):
        if b.reference == a.reference and b != a:
            assert b.text != a.text
    assert sum(a.reference == b.reference for a, b in zip(s[0::2], s[1::2])) > 30


def test_css_2d_draws_tirg_scenes(data_root):
    from cirbench_css_synth import render_scene

    ds = build("css-2d", data_root, None)
    img = ds.images([1])[0].permute(1, 2, 0).numpy()
    assert np.array_equal(img, render_scene(css_content()["train"]["objects_img"][1]))
    assert tuple(img[int(0.2 * 64), int(0.2 * 64)]) == (244, 35, 35)  # the large red rectangle
    assert [q.targets for q in ds.queries()] == [q.targets for q in build("css", data_root, None).queries()]
    assert build("css-2d", data_root, None, size=32).images([0, 1]).shape == (2, 3, 32, 32)


def test_css_2d_needs_only_the_npy(data_root):
    import shutil

    shutil.rmtree(data_root / "css" / "images")
    assert REGISTRY.dataset("css-2d").availability(DataLocations(root=data_root)).ok
    assert not REGISTRY.dataset("css").availability(DataLocations(root=data_root)).ok


def test_css_malformed_file_names_it(data_root):
    from cirbench_css.reader import CSS_FILE
    from tests.fixtures.local_data import save_py2_npy

    content = css_content()
    del content["test"]["mods"][0]["to_str"]
    save_py2_npy(data_root / "css" / CSS_FILE, content)
    with pytest.raises(AnnotationError, match=r"dup.npy: test mod 0: key 'to_str' missing"):
        build("css", data_root, None)
