"""Loaders of FashionIQ, Shoes, Birds-to-Words and CIRR on tiny fixtures written in their
canonical layouts (docs/papers.md §1.4-1.7), and the per-query candidate lists
(``Query.candidates``) that express CIRR's Recall_subset@K."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import cirbench
from cirbench.data import AnnotationError, DataLocations, DatasetNotAvailable, Query, UnsafePathError, dataset_env_var
from cirbench.data.verify import verify_dataset
from cirbench.evaluate import evaluate
from cirbench.metrics import NO_HIT, rank_queries
from cirbench.plugins import load_registry
from cirbench.testing import CheckContext, RandomDataset, parametrize_with_checks, run_checks
from conftest import SMOKE
from local_data_fixtures import (
    B2W_ROWS,
    CIRR_VAL,
    FIQ_PAIRS,
    SHOES_EVAL,
    SHOES_TRAIN,
    b2w_path,
    b2w_url,
    cirr_image_path,
    shoe,
    write_birds_to_words,
    write_cirr,
    write_fashioniq,
    write_shoes,
)

REGISTRY = load_registry()
MORE = ("fashioniq", "fashioniq-joined", "shoes", "birds-to-words", "cirr", "cirr-subset")


@pytest.fixture(autouse=True)
def _quiet(monkeypatch):
    monkeypatch.setenv("CIRBENCH_NO_PROGRESS", "1")
    for name in MORE:
        monkeypatch.delenv(dataset_env_var(name), raising=False)
    monkeypatch.delenv("CIRBENCH_DATA", raising=False)
    torch.set_num_threads(1)


def write_all(root: Path) -> Path:
    write_fashioniq(root / "fashioniq")
    write_shoes(root / "shoes")
    write_birds_to_words(root / "birds-to-words")
    write_cirr(root / "cirr")
    return root


@pytest.fixture
def data_root(tmp_path) -> Path:
    return write_all(tmp_path / "data")


def build(name: str, root: Path, size: int = 32):
    return REGISTRY.dataset(name).create(dataclasses.replace(SMOKE, image_size=size), None, DataLocations(root=root))


def entry_of(ds, image_id: int) -> str:
    return ds.index.entries[int(image_id)]


# --- registration -----------------------------------------------------------------------------------
def test_datasets_and_protocols_are_registered():
    # name -> (the plugin that provides it, the folder under the data root it reads)
    expected = {"fashioniq": ("fashioniq", "fashioniq"), "fashioniq-joined": ("fashioniq", "fashioniq"),
                "shoes": ("shoes", "shoes"), "birds-to-words": ("birds-to-words", "birds-to-words"),
                "cirr": ("cirr", "cirr"), "cirr-subset": ("cirr", "cirr")}
    assert set(expected) == set(MORE)
    for name in MORE:
        spec = REGISTRY.dataset(name)
        assert (REGISTRY.provider("dataset", name).plugin, spec.layout.folder) == expected[name], name
        assert spec.description.strip() and spec.layout.url.startswith(("http://", "https://")), name
    p = REGISTRY.protocols
    assert p["full-fashioniq"].ks == (10, 50) and p["full-fashioniq"].iterations == 100_000
    assert p["full-fashioniq"].lr_decay_every == 8_000 and p["full-fashioniq"].batch_size == 32
    assert p["full-shoes"].ks == (1, 10, 50)
    assert p["full-birds-to-words"].ks == (10, 50)
    assert p["full-cirr"].ks == (1, 2, 5, 10, 50, 100) and p["full-cirr-subset"].ks == (1, 2, 3)
    # the two CIRR presets differ only in what is reported: the same training
    a, b = p["full-cirr"].as_dict(), p["full-cirr-subset"].as_dict()
    assert {k for k in a if a[k] != b[k]} == {"name", "description", "ks"}


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
    from local_data_fixtures import write_image

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


# --- Birds-to-Words ------------------------------------------------------------------------------------------
def test_birds_to_words_protocol(data_root):
    from cirbench_birds_to_words import image_entry

    assert image_entry(b2w_url(4), "f", 1) == b2w_path(4)  # the query string is dropped
    ds = build("birds-to-words", data_root)
    k = {i: int(e.split("/")[3]) for i, e in enumerate(ds.index.entries)}  # image number in the URL
    assert [(k[t.reference], k[t.target], t.text) for t in ds.train_triplets()] == [
        (a, b, text) for a, b, s, text in B2W_ROWS if s == "train"]
    # image 1 + description -> image 2, one query per annotation row of the test split
    assert [(k[q.reference], tuple(k[t] for t in q.targets), q.text) for q in ds.queries()] == [
        (10, (11,), "animal2 has a darker head and a shorter tail"), (10, (11,), "the second bird is grayer"),
        (12, (10,), "animal2 has a longer neck")]
    # gallery: every test-split image (the self pair's image too), never a train or val image
    assert [k[i] for i in ds.gallery()] == [10, 11, 12, 13]
    assert 5 not in k.values() and 6 not in k.values()  # val rows are not used
    facts = ds.describe()
    assert facts["skipped_self_pairs"] == 1 and facts["unused_val_rows"] == 1
    assert ds.images([0]).shape == (1, 3, 32, 32)


def test_birds_to_words_without_header(tmp_path):
    write_birds_to_words(tmp_path / "birds-to-words", header=False)
    assert len(build("birds-to-words", tmp_path).queries()) == 3


def test_birds_to_words_errors(data_root):
    root = data_root / "birds-to-words"
    tsv = root / "birds-to-words-v1.0.tsv"
    lines = tsv.read_text().splitlines()
    tsv.write_text("\n".join(lines[:3] + ["\t".join(lines[3].split("\t")[:9])] + lines[4:]) + "\n")
    with pytest.raises(AnnotationError, match=r"birds-to-words-v1.0.tsv:4: expected 11 tab-separated columns, got 9"):
        build("birds-to-words", data_root)
    tsv.write_text("\n".join(lines[:2] + [lines[2].replace("\ttrain\t", "\ttraining\t")] + lines[3:]) + "\n")
    with pytest.raises(AnnotationError, match=r"tsv:3: column 'split' is 'training'"):
        build("birds-to-words", data_root)
    tsv.write_text("\n".join(lines[:2] + [lines[2].replace(b2w_url(1), "medium.jpg")] + lines[3:]) + "\n")
    with pytest.raises(AnnotationError, match=r"tsv:3: image URL 'medium.jpg' has no host"):
        build("birds-to-words", data_root)
    tsv.write_text("\n".join(lines[:2] + [lines[2].replace(b2w_url(1), "https://x.org/../../../etc/passwd")]
                             + lines[3:]) + "\n")
    with pytest.raises(UnsafePathError, match=r"birds-to-words-v1.0.tsv:3"):
        build("birds-to-words", data_root)
    shutil.rmtree(root / "images")
    with pytest.raises(DatasetNotAvailable) as err:
        build("birds-to-words", data_root)
    assert "images (the downloaded images" in str(err.value)
    assert "https://github.com/google-research-datasets/birds-to-words" in str(err.value)


def test_birds_to_words_verify_reports_counts(data_root):
    report = verify_dataset(REGISTRY.dataset("birds-to-words"), DataLocations(root=data_root))
    assert report.ok, report.problems
    counts = {c.what: (c.found, c.expected) for c in report.counts}
    assert counts == {"train rows (annotations)": (3, None), "val rows (annotations)": (1, None),
                      "test rows (annotations)": (4, None), "distinct train images": (4, None),
                      "distinct test images": (4, None)}
    assert report.images_listed == report.images_ok == 8  # train and test images


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


# --- per-query candidate lists (the core extension) ----------------------------------------------------------
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_candidates_rank_like_the_candidate_sub_gallery(data):
    """Property: a query with candidates ranks exactly as it would against the sub-gallery of
    its candidates (in gallery order), whatever the chunk size; queries without candidates
    are unchanged."""
    n_g = data.draw(st.integers(2, 9))
    n_q = data.draw(st.integers(1, 6))
    dim = 3
    vals = st.integers(-2, 2)  # small integer vectors: many exact ties
    g = torch.tensor(data.draw(st.lists(st.lists(vals, min_size=dim, max_size=dim), min_size=n_g, max_size=n_g)),
                     dtype=torch.float32) + 0.01
    q = torch.tensor(data.draw(st.lists(st.lists(vals, min_size=dim, max_size=dim), min_size=n_q, max_size=n_q)),
                     dtype=torch.float32) + 0.01
    ids = [10 + 3 * i for i in range(n_g)]
    refs = [data.draw(st.sampled_from(ids + [999])) for _ in range(n_q)]
    targets = [tuple(data.draw(st.sets(st.sampled_from(ids), min_size=1, max_size=3))) for _ in range(n_q)]
    cands = [data.draw(st.one_of(st.none(), st.sets(st.sampled_from(ids + [5]), max_size=n_g).map(tuple)))
             for _ in range(n_q)]
    chunk = data.draw(st.integers(1, 4))
    got = rank_queries(q, g, ids, refs, targets, chunk=chunk, candidates=cands)
    for i in range(n_q):
        if cands[i] is None:
            sub = list(range(n_g))
        else:
            sub = [j for j, x in enumerate(ids) if x in cands[i]]
        if not sub:
            assert got[i] == NO_HIT
            continue
        alone = rank_queries(q[i:i + 1], g[sub], [ids[j] for j in sub], [refs[i]], [targets[i]])
        assert got[i] == alone[0], (i, cands[i])


def test_candidates_exclude_targets_outside_them():
    g = torch.eye(4)
    q = torch.tensor([[1.0, 0.1, 0, 0], [1.0, 0.1, 0, 0]])
    ranks = rank_queries(q, g, [0, 1, 2, 3], [3, 3], [(0,), (1,)], candidates=[(1, 2), (1, 2)])
    assert ranks.tolist() == [NO_HIT, 0]  # target 0 is no candidate; target 1 is first of {1, 2}
    assert rank_queries(q, g, [0, 1, 2, 3], [3, 3], [(0,), (1,)]).tolist() == [0, 1]
    with pytest.raises(ValueError, match="2 query embeddings, 1 candidate lists"):
        rank_queries(q, g, [0, 1, 2, 3], [3, 3], [(0,), (1,)], candidates=[None])


class _SubsetRandom(RandomDataset):
    """RandomDataset whose odd queries carry a candidate list (their targets and two more)."""

    def __init__(self, image_size: int = 16, bad: bool = False) -> None:
        super().__init__(image_size, num_test_images=10, num_queries=12)
        rng = np.random.default_rng(5)
        out = []
        for i, q in enumerate(self._queries):
            if i % 2:
                others = [int(x) for x in self.test_ids if x not in q.targets and x != q.reference]
                extra = [int(x) for x in rng.choice(others, size=2, replace=False)]
                cands = tuple(extra) if bad and i == 1 else tuple(sorted({*q.targets, *extra}))
                q = dataclasses.replace(q, candidates=cands)
            out.append(q)
        self._queries = out


class _Pooled(cirbench.Composer):
    """Embeddings = pooled pixels (+ a fixed offset for queries): deterministic, no training."""

    def compose(self, images, texts):
        return torch.nn.functional.adaptive_avg_pool2d(images, 2).flatten(1) + 0.3

    def embed_target(self, images):
        return torch.nn.functional.adaptive_avg_pool2d(images, 2).flatten(1)

    def training_loss(self, batch):  # pragma: no cover - never trained here
        raise NotImplementedError


def test_evaluate_honours_candidates():
    ds = _SubsetRandom()
    protocol = dataclasses.replace(SMOKE, image_size=16)
    composer = _Pooled(cirbench.ComposerContext(protocol=protocol, train_texts=ds.train_texts()))
    ev = evaluate(composer, ds, (1, 2, 3), batch_size=5, chunk=3)
    from cirbench.data.model_inputs import normalize_images

    qs = ds.queries()
    q_emb = composer.compose(normalize_images(ds.images([q.reference for q in qs]), "cpu"), [q.text for q in qs])
    gallery = ds.gallery()
    g_emb = composer.embed_target(normalize_images(ds.images(gallery), "cpu"))
    for i, q in enumerate(qs):
        sub = [j for j, x in enumerate(gallery) if q.candidates is None or int(x) in q.candidates]
        want = rank_queries(q_emb[i:i + 1], g_emb[sub], gallery[sub], [q.reference], [q.targets])
        assert ev.ranks[i] == int(want[0])
    assert all(ev.ranks[i] < 4 for i in range(1, 12, 2))  # at most 4 candidates besides the reference


def test_conformance_flags_candidates_without_the_target():
    spec = cirbench.DatasetSpec("subset-bad", lambda ctx: _SubsetRandom(ctx.protocol.image_size, bad=True))
    results = {r.check: r for r in run_checks("dataset", spec)}
    bad = results["check_query_targets_in_gallery"]
    assert bad.status == "failed" and "are not among its candidates" in bad.message
    good = cirbench.DatasetSpec("subset-ok", lambda ctx: _SubsetRandom(ctx.protocol.image_size))
    assert {r.status for r in run_checks("dataset", good)} == {"passed"}


def test_query_candidates_default_keeps_old_records():
    q = Query(1, "x", (2,), "g")
    assert q.candidates is None and q == Query(1, "x", (2,), "g", None)


# --- end to end -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["fashioniq", "cirr-subset"])
def test_smoke_run(name, data_root, tmp_path, capsys):
    """``cirbench run`` under ``smoke``: per-category galleries (fashioniq) and per-query
    candidates (cirr-subset) through the whole engine; results per group."""
    from cirbench.cli import main

    argv = ["run", "--dataset", name, "--composer", "image-only", "--protocol", "smoke", "--seed", "0",
            "--results", str(tmp_path / "res"), "--cache-dir", str(tmp_path / "cache"), "--threads", "1",
            "--data-root", str(data_root)]
    assert main(argv) == 0
    assert "ok: R@1" in capsys.readouterr().out
    (result,) = [json.loads(p.read_text()) for p in (tmp_path / "res").rglob("*.json")]
    assert result["status"] == "ok"
    groups = result["metrics"]["groups"]
    if name == "fashioniq":
        assert sorted(groups) == ["dress", "shirt", "toptee"]
    else:  # five candidates besides the reference: R@5 and R@10 are certain
        overall = result["metrics"]["overall"]
        assert overall["R@5"] == overall["R@10"] == 1.0 and result["eval"]["num_queries"] == 2


# --- conformance on the fixtures ------------------------------------------------------------------------------
CONFORMANCE = CheckContext(registry=REGISTRY)


@pytest.fixture(scope="module")
def conformance_data(tmp_path_factory):
    root = write_all(tmp_path_factory.mktemp("conformance-more"))
    CONFORMANCE.data = DataLocations(root=root)
    return root


@parametrize_with_checks(datasets=list(MORE), context=CONFORMANCE)
def test_more_local_datasets_conform(name, check, conformance_data):
    check(name)
