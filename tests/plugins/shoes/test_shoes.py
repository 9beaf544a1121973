"""The shoes loader on tiny fixtures written in the canonical layout (from test_local_data_more.py,
split by issue 12)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from cirbench.data import AnnotationError, DataLocations, DatasetNotAvailable
from cirbench.data.verify import verify_dataset
from tests.fixtures.local_data import SHOES_EVAL, SHOES_TRAIN, shoe, write_shoes
from tests.fixtures.more_loaders import REGISTRY, build, entry_of
from tests.fixtures.more_loaders import _quiet, data_root  # noqa: F401  (pytest fixtures)


# --- Shoes ---------------------------------------------------------------------------------------------
def test_shoes_rules(data_root):
    ds = build("shoes", data_root)
    name = {i: Path(e).name for i, e in enumerate(ds.index.entries)}
    assert [(name[t.reference], t.text, name[t.target]) for t in ds.train_triplets()] == [
        (shoe("clogs", 1), "is darker", shoe("clogs", 2)), (shoe("clogs", 2), "has higher heels", shoe("clogs", 3)),
        (shoe("clogs", 3), "is red", shoe("clogs", 4))]
    assert [(name[q.reference], q.text, tuple(name[t] for t in q.targets)) for q in ds.queries()] == [
        (shoe("pumps", 1), "is black", (shoe("pumps", 2),)), (shoe("pumps", 3), "has a strap", (shoe("pumps", 1),))]
    # gallery: every eval image, including one no caption names; no training image
    assert [name[i] for i in ds.gallery()] == SHOES_EVAL
    assert all(name[t.reference] in SHOES_TRAIN for t in ds.train_triplets())
    facts = ds.describe()
    assert facts["skipped_self_pairs"] == 1 and facts["cross_split_pairs"] == 1
    # images are found by name under the womens_* folders only
    assert entry_of(ds, ds.gallery()[0]) == f"attributedata/womens_pumps/0/{shoe('pumps', 1)}"
    assert all("womens_" in e for e in ds.index.entries)
    assert ds.images(ds.gallery()[:2]).shape == (2, 3, 32, 32)


def test_shoes_errors(data_root):
    root = data_root / "shoes"
    shutil.move(str(root / "attributedata" / "womens_pumps"), str(root / "pumps"))
    assert REGISTRY.dataset("shoes").availability(DataLocations(root=data_root)).ok  # womens_clogs is left ...
    with pytest.raises(AnnotationError, match=r"eval_im_names.txt: image "
                       r"'img_womens_pumps_1.jpg' is not under any womens_\* folder"):
        build("shoes", data_root)  # ... but the eval images are not found (mens_boots/ does not count)
    shutil.move(str(root / "pumps"), str(root / "attributedata" / "womens_pumps"))
    (root / "attributedata" / "womens_clogs" / "0" / shoe("clogs", 3)).unlink()
    with pytest.raises(AnnotationError, match=r"relative_captions_shoes.json entry 1: image 'img_womens_clogs_3.jpg'"):
        build("shoes", data_root)
    shutil.rmtree(root / "attributedata" / "womens_pumps")
    shutil.rmtree(root / "attributedata" / "womens_clogs")
    with pytest.raises(DatasetNotAvailable) as err:
        build("shoes", data_root)
    assert "**/womens_* (the Attribute Discovery image folders), found 0" in str(err.value)
    assert "http://tamaraberg.com/attributesDataset" in str(err.value)
    write_shoes(root)
    captions = json.loads((root / "relative_captions_shoes.json").read_text())
    captions[2]["RelativeCaption"] = 7
    (root / "relative_captions_shoes.json").write_text(json.dumps(captions))
    with pytest.raises(AnnotationError, match=r"relative_captions_shoes.json: entry 2: field 'RelativeCaption'"):
        build("shoes", data_root)


def test_shoes_duplicate_image_name_is_an_error(data_root):
    from tests.fixtures.local_data import write_image

    write_image(data_root / "shoes" / "attributedata" / "womens_flats" / "0" / shoe("clogs", 1), 3)
    with pytest.raises(AnnotationError, match=r"image name 'img_womens_clogs_1.jpg' also found at"):
        build("shoes", data_root)


def test_shoes_verify(data_root):
    (data_root / "shoes" / "attributedata" / "womens_pumps" / "0" / shoe("pumps", 5)).unlink()
    report = verify_dataset(REGISTRY.dataset("shoes"), DataLocations(root=data_root))
    counts = {c.what: (c.found, c.expected) for c in report.counts}
    assert counts == {"captions in relative_captions_shoes.json": (7, 10_751),
                      "names in train_im_names.txt": (4, 10_000), "names in eval_im_names.txt": (5, 4_658),
                      "captions with both images in train": (3, 8_990),
                      "captions with both images in eval": (3, 1_761)}
    missing = [p for p in report.problems if "missing" in p.message]
    assert len(missing) == 1 and missing[0].path.endswith(shoe("pumps", 5))
    assert "listed in eval_im_names.txt" in missing[0].message
