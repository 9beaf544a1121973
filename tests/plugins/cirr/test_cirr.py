"""The cirr and cirr-subset loaders on tiny fixtures written in the canonical layout (from
test_local_data_more.py, split by issue 12)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cirbench.data import AnnotationError, DataLocations, DatasetNotAvailable
from cirbench.data.verify import verify_dataset
from tests.fixtures.local_data import CIRR_VAL, cirr_image_path
from tests.fixtures.more_loaders import REGISTRY, build, entry_of
from tests.fixtures.more_loaders import _quiet, data_root  # noqa: F401  (pytest fixtures)


# --- CIRR --------------------------------------------------------------------------------------------------------
def test_cirr_recall_protocol(data_root):
    ds = build("cirr", data_root)
    name = {i: Path(e).stem for i, e in enumerate(ds.index.entries)}
    assert [(name[t.reference], t.text, name[t.target]) for t in ds.train_triplets()] == [
        (f"train-{2 * k}-img", f"train change {k}", f"train-{2 * k + 1}-img") for k in range(3)]
    # gallery: every val image, in the split file's order
    assert [name[i] for i in ds.gallery()] == CIRR_VAL
    assert entry_of(ds, ds.gallery()[0]) == cirr_image_path(CIRR_VAL[0])[2:]
    q = ds.queries()
    assert [(name[x.reference], x.text, tuple(name[t] for t in x.targets), x.candidates) for x in q] == [
        ("dev-0-img", "show two dogs instead", ("dev-1-img",), None), ("dev-6-img", "make it night", ("dev-2-img",), None)]
    # soft targets are kept for analysis, by id; the metric counts target_hard only
    assert [{name[i]: s for i, s in soft.items()} for soft in ds.soft_targets] == [
        {"dev-1-img": 1.0, "dev-2-img": 0.5, "dev-3-img": -1.0}, {"dev-2-img": 1.0, "dev-7-img": 0.2}]
    facts = ds.describe()
    assert facts["soft_target_scores"] == {"-1": 1, "0.2": 1, "0.5": 1, "1": 2}
    assert facts["skipped_self_pairs"] == 1
    assert ds.images(ds.gallery()[:3]).shape == (3, 3, 32, 32)


def test_cirr_subset_candidates_are_the_set_members_but_the_reference(data_root):
    ds = build("cirr-subset", data_root)
    name = {i: Path(e).stem for i, e in enumerate(ds.index.entries)}
    q = ds.queries()
    assert [tuple(name[c] for c in x.candidates) for x in q] == [
        tuple(f"dev-{k}-img" for k in range(1, 6)), tuple(f"dev-{k}-img" for k in (7, 2, 3, 4, 5))]
    for x in q:
        assert x.reference not in x.candidates and set(x.targets) <= set(x.candidates)
        assert set(x.candidates) <= set(ds.gallery().tolist())
    # the same training triplets and gallery as cirr
    plain = build("cirr", data_root)
    assert ds.train_triplets() == plain.train_triplets() and ds.gallery().tolist() == plain.gallery().tolist()


def test_cirr_errors_name_file_entry_and_field(data_root):
    path = data_root / "cirr" / "cirr" / "captions" / "cap.rc2.val.json"
    pairs = json.loads(path.read_text())
    pairs[1]["img_set"]["members"].remove(pairs[1]["target_hard"])
    path.write_text(json.dumps(pairs))
    build("cirr", data_root)  # Recall@K does not read the image sets' targets ...
    with pytest.raises(AnnotationError, match=r"cap.rc2.val.json: entry 1: field 'img_set.members' lacks the target"):
        build("cirr-subset", data_root)  # ... Recall_subset@K does
    pairs[1]["reference"] = "dev-99-img"
    path.write_text(json.dumps(pairs))
    with pytest.raises(AnnotationError, match=r"cap.rc2.val.json: entry 1: field 'reference': image 'dev-99-img' "
                                              r"is not in cirr/image_splits/split.rc2.val.json"):
        build("cirr", data_root)
    del pairs[0]["caption"]
    path.write_text(json.dumps(pairs))
    with pytest.raises(AnnotationError, match=r"cap.rc2.val.json: entry 0 \(pairid 100\): field 'caption' missing"):
        build("cirr", data_root)
    (data_root / "cirr" / "cirr" / "image_splits" / "split.rc2.train.json").unlink()
    with pytest.raises(DatasetNotAvailable) as err:
        build("cirr-subset", data_root)
    assert "cirr/image_splits/split.rc2.train.json (train image list), found 0" in str(err.value)
    assert "https://github.com/Cuberick-Orion/CIRR" in str(err.value)


def test_cirr_verify(data_root):
    (data_root / "cirr" / "dev" / "dev-4-img.png").unlink()
    report = verify_dataset(REGISTRY.dataset("cirr"), DataLocations(root=data_root))
    counts = {c.what: (c.found, c.expected) for c in report.counts}
    assert counts == {"val pairs": (3, 4_181), "val images": (8, 2_297), "train pairs": (3, None),
                      "train images": (6, None)}
    missing = [p for p in report.problems if "missing" in p.message]
    assert len(missing) == 1 and missing[0].path.endswith("dev/dev-4-img.png")
    assert "listed in cirr/image_splits/split.rc2.val.json" in missing[0].message
