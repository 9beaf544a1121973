"""FashionIQ's hidden test split and the files its starter kit reads (cirbench/export.py with the
fashioniq loaders)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from cirbench.data.errors import AnnotationError
from cirbench.data.model_inputs import normalize_images
from cirbench.export import export_predictions
from tests.fixtures.local_data import FIQ_TEST_IMAGES, write_fashioniq, write_fashioniq_test
from tests.fixtures.export import _quiet  # noqa: F401  (pytest fixtures)
from tests.fixtures.export import build, composer, expected_top


@pytest.fixture
def fiq_root(tmp_path) -> Path:
    root = tmp_path / "data"
    write_fashioniq(root / "fashioniq")
    write_fashioniq_test(root / "fashioniq")
    return root


@pytest.mark.parametrize("name", ["fashioniq", "fashioniq-joined"])
def test_fashioniq_export_writes_the_starter_kit_files(fiq_root, tmp_path, name):
    ds = build(name, fiq_root)
    split = ds.hidden_split()
    files = export_predictions(composer(), split, tmp_path / "out")
    assert [f.name for f in files] == [f"{c}.test.pred.json" for c in ("dress", "shirt", "toptee")]
    comp = composer()
    for cat, f in zip(("dress", "shirt", "toptee"), files):
        entries = json.loads((fiq_root / "fashioniq" / "captions" / f"cap.{cat}.test.json").read_text())
        got = json.loads(f.read_text())
        assert len(got) == len(entries) == 3
        gallery = [int(i) for i in split.galleries[cat]]
        assert len(gallery) == FIQ_TEST_IMAGES
        for n, (e, g) in enumerate(zip(entries, got)):
            assert {k: v for k, v in g.items() if k != "ranking"} == e  # the kit's entry, kept
            q = next(q for q in split.queries if q.key == f"{cat}:{n}")
            texts = ds.texts(cat, e["captions"])
            assert q.texts == tuple(texts) and len(texts) == (1 if name == "fashioniq-joined" else 2)
            # several texts: the mean of the unit-normalised compositions
            vecs = comp.compose(normalize_images(split.images.images([q.reference] * len(texts))), texts).tolist()
            units = [[x / math.sqrt(sum(y * y for y in v)) for x in v] for v in vecs]
            qv = [sum(col) / 1.0 for col in zip(*units)] if len(units) > 1 else vecs[0]
            want = expected_top(split.images, qv, gallery, q.reference, 50)
            assert g["ranking"] == [split.image_names[i] for i in want]
            assert e["candidate"] not in g["ranking"] and len(set(g["ranking"])) == 50


def test_fashioniq_hidden_split_needs_the_test_files(tmp_path):
    root = tmp_path / "data"
    write_fashioniq(root / "fashioniq")
    with pytest.raises(AnnotationError, match=r"split\.dress\.test\.json.*missing"):
        build("fashioniq", root).hidden_split()
