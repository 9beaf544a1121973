"""The fashioniq and fashioniq-joined loaders on tiny fixtures written in the canonical layout
(from test_local_data_more.py, split by issue 12)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from cirbench.data import AnnotationError, DataLocations, DatasetNotAvailable, UnsafePathError
from cirbench.data.verify import verify_dataset
from tests.fixtures.protocols import SMOKE
from tests.fixtures.local_data import FIQ_PAIRS
from tests.fixtures.more_loaders import REGISTRY, build, entry_of
from tests.fixtures.more_loaders import _quiet, data_root  # noqa: F401  (pytest fixtures)


# --- FashionIQ --------------------------------------------------------------------------------------------
def test_fashioniq_one_query_per_caption_with_category_galleries(data_root):
    ds = build("fashioniq", data_root)
    assert ds.base_loss == "batch_classification" and ds.has_group_galleries()
    name = {i: Path(e).stem for i, e in enumerate(ds.index.entries)}
    # training: one triplet per caption of every train pair
    assert [(name[t.reference], t.text, name[t.target]) for t in ds.train_triplets()] == [
        ("DT0", "is red", "DT1"), ("DT0", "has long sleeves", "DT1"),
        ("DT1", "is shorter", "DT2"), ("DT1", "more casual", "DT2"),
        ("ST0", "has a collar", "ST1"), ("ST0", "is white", "ST1"),
        ("TT0", "has no sleeves", "TT1"), ("TT0", "is black", "TT1")]
    # queries: one per non-empty caption, grouped by category, identity hits; the self pair
    # and the blank caption are left out
    got = [(q.group, name[q.reference], q.text, tuple(name[t] for t in q.targets)) for q in ds.queries()]
    assert got == [
        ("dress", "DV0", "is blue", ("DV1",)), ("dress", "DV0", "has stripes", ("DV1",)),
        ("dress", "DV1", "is darker", ("DV2",)),
        ("shirt", "SV0", "has buttons", ("SV1",)), ("shirt", "SV0", "is plaid", ("SV1",)),
        ("shirt", "SV2", "is green", ("SV0",)), ("shirt", "SV2", "has a pocket", ("SV0",)),
        ("toptee", "TV0", "has a print", ("SV0",)), ("toptee", "TV0", "is looser", ("SV0",)),
        ("toptee", "TV1", "is pink", ("TV0",)), ("toptee", "TV1", "has a logo", ("TV0",))]
    assert all(q.reference not in q.targets and q.candidates is None for q in ds.queries())
    facts = ds.describe()
    assert facts["skipped_self_pairs"] == 1 and facts["skipped_empty_captions"] == 1
    assert facts["queries_per_group"] == {"dress": 3, "shirt": 4, "toptee": 4}
    # VAL's galleries: the unique images of the category's val pairs (not the split file)
    galleries = {c: [name[i] for i in ds.gallery(c)] for c in FIQ_PAIRS}
    assert galleries == {"dress": ["DV0", "DV1", "DV2", "DV3"], "shirt": ["SV0", "SV1", "SV2"],
                         "toptee": ["TV0", "SV0", "TV1"]}
    sv0 = ds.index.get("images/SV0.jpg")
    assert sv0 in ds.gallery("shirt") and sv0 in ds.gallery("toptee")  # one id, two galleries
    assert sorted(ds.gallery().tolist()) == sorted({int(i) for c in FIQ_PAIRS for i in ds.gallery(c)})
    for q in ds.queries():
        assert set(q.targets) <= set(ds.gallery(q.group).tolist())
    # no training image is evaluated; the split files' unpaired images and the test file are not loaded
    train = {i for t in ds.train_triplets() for i in (t.reference, t.target)}
    assert not train & set(ds.gallery().tolist())
    assert not {"XT9", "XV9", "DX0"} & set(name.values())
    assert entry_of(ds, ds.index.get("images/SV1.png")) == "images/SV1.png"  # the .png fallback
    with pytest.raises(KeyError, match="no gallery for group 'skirt'"):
        ds.gallery("skirt")
    assert ds.images([0, ds.num_images - 1]).shape == (2, 3, 32, 32)


def test_fashioniq_joined_captions(data_root):
    from cirbench_fashioniq import join_captions

    assert join_captions("Dress", ["Is Blue ", "has stripes"]) == "dress is blue and it has stripes"
    assert join_captions("dress", ["is darker", " "]) == "dress is darker"
    ds = build("fashioniq-joined", data_root)
    per_caption = build("fashioniq", data_root)
    texts = [(q.group, q.text) for q in ds.queries()]
    assert texts == [("dress", "dress is blue and it has stripes"), ("dress", "dress is darker"),
                     ("shirt", "shirt has buttons and it is plaid"), ("shirt", "shirt is green and it has a pocket"),
                     ("toptee", "toptee has a print and it is looser"), ("toptee", "toptee is pink and it has a logo")]
    assert [t.text for t in ds.train_triplets()][:2] == ["dress is red and it has long sleeves",
                                                          "dress is shorter and it more casual"]
    assert len(ds.train_triplets()) == 4
    for c in FIQ_PAIRS:  # the same galleries as the per-caption protocol
        assert ds.gallery(c).tolist() == per_caption.gallery(c).tolist()
    assert ds.describe()["skipped_empty_captions"] == 0


def test_fashioniq_missing_files_name_them_and_the_url(tmp_path, data_root):
    root = data_root / "fashioniq"
    (root / "captions" / "cap.shirt.val.json").unlink()
    shutil.rmtree(root / "images")
    spec = REGISTRY.dataset("fashioniq")
    with pytest.raises(DatasetNotAvailable) as err:
        spec.create(SMOKE, None, DataLocations(root=data_root))
    msg = str(err.value)
    problems = msg.split("expected there")[0]
    assert "captions/cap.shirt.val.json (shirt val captions), found 0" in problems
    assert "images (the image files, images/<asin>.jpg), found 0" in problems
    assert "cap.dress.val.json" not in problems  # present
    assert "https://github.com/XiaoxiaoGuo/fashion-iq" in msg and "--data fashioniq=PATH" in msg
    assert not REGISTRY.dataset("fashioniq-joined").availability(DataLocations(root=data_root)).ok
    empty = spec.availability(DataLocations(root=tmp_path / "nowhere"))
    assert not empty.ok and "the folder does not exist" in empty.detail


def test_fashioniq_malformed_entry_names_file_and_field(data_root):
    path = data_root / "fashioniq" / "captions" / "cap.dress.val.json"
    entries = json.loads(path.read_text())
    del entries[1]["target"]
    path.write_text(json.dumps(entries))
    with pytest.raises(AnnotationError, match=r"captions/cap.dress.val.json: entry 1: field 'target' missing"):
        build("fashioniq", data_root)
    entries[1]["target"], entries[0]["captions"] = "DV2", "is blue"
    path.write_text(json.dumps(entries))
    with pytest.raises(AnnotationError, match=r"cap.dress.val.json: entry 0: field 'captions'"):
        build("fashioniq", data_root)
    path.write_text("[{")
    with pytest.raises(AnnotationError, match=r"cap.dress.val.json:1: not valid JSON"):
        build("fashioniq", data_root)


def test_fashioniq_unsafe_asin_is_refused(data_root):
    path = data_root / "fashioniq" / "captions" / "cap.shirt.train.json"
    path.write_text(json.dumps([{"candidate": "../../../etc/passwd", "target": "ST1", "captions": ["x", "y"]}]))
    with pytest.raises(UnsafePathError, match=r"cap.shirt.train.json.*'images/../../../etc/passwd.jpg'"):
        build("fashioniq", data_root)


def test_fashioniq_verify_counts_against_reference(data_root):
    (data_root / "fashioniq" / "images" / "DV2.jpg").unlink()
    report = verify_dataset(REGISTRY.dataset("fashioniq"), DataLocations(root=data_root))
    counts = {c.what: (c.found, c.expected) for c in report.counts}
    assert counts["val pairs of dress (captions/cap.dress.val.json)"] == (3, 2017)
    assert counts["train images of shirt (image_splits/split.shirt.train.json)"] == (3, 19036)
    assert len(counts) == 12 and all(c.source == "docs/papers.md §1.4" for c in report.counts)
    missing = [p for p in report.problems if "missing" in p.message]
    assert len(missing) == 1 and missing[0].path.endswith("images/DV2.jpg")
    assert "listed in captions/cap.dress.val.json" in missing[0].message
    assert report.images_listed == report.images_ok + 1
