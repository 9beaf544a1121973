"""The birds-to-words loader on tiny fixtures written in the canonical layout (from
test_local_data_more.py, split by issue 12)."""

from __future__ import annotations

import shutil

import pytest

from cirbench.data import AnnotationError, DataLocations, DatasetNotAvailable, UnsafePathError
from cirbench.data.verify import verify_dataset
from tests.fixtures.local_data import B2W_ROWS, b2w_path, b2w_url, write_birds_to_words
from tests.fixtures.more_loaders import REGISTRY, build
from tests.fixtures.more_loaders import _quiet, data_root  # noqa: F401  (pytest fixtures)


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
