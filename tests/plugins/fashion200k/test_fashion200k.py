"""The fashion200k loader on tiny fixtures written in the canonical layout (from
test_local_data.py, split by issue 12)."""

from __future__ import annotations

import pytest

from cirbench.data import AnnotationError
from tests.fixtures.local_data import f200k_path
from tests.fixtures.local_loaders import _quiet, data_root  # noqa: F401  (pytest fixtures)
from tests.fixtures.local_loaders import build


def test_fashion200k_follows_tirg(data_root):
    from cirbench_fashion200k.dataset import clean_caption, different_words, parent_captions

    assert clean_caption(" a.b?c&d*e ") == "adotmarkbquestionmarkcandmarkdstarmarke"
    assert parent_captions("red dress red") == ["dress", "red red"]  # str.replace removes every copy
    assert different_words("black lace dress", "white lace dress") == ("black", "white")
    ds = build("fashion200k", data_root, None)
    assert ds.base_loss == "batch_classification" and ds.num_images == 18
    assert ds.captions[8] == "green maxi dressdotmark"
    test_ids = ds.gallery().tolist()
    assert test_ids == list(range(10, 18))
    q = ds.queries()
    assert [x.text for x in q] == ["replace black with white", "replace silk with lace", "replace silk with lace"]
    # label-based: both views of the target product count
    assert q[0].targets == (12, 13) and q[1].reference == 15
    # the pool: two draws per training image; sources modifiable; target caption one word apart
    trips = ds.train_triplets()
    assert len(trips) == 2 * 10 and all(t.reference != 8 and t.reference != 9 for t in trips)
    for t in trips:
        cs, ct = ds.captions[t.reference], ds.captions[t.target]
        assert cs != ct and len(set(cs.split()) ^ set(ct.split())) == 2
        assert t.text == "replace {} with {}".format(*different_words(cs, ct))
    assert {"replace", "with", "red floral dress"} <= {w for t in ds.train_texts() for w in [t, *t.split()]}
    assert build("fashion200k", data_root, None).train_triplets() == trips  # fixed pool


def test_fashion200k_bad_query_line(data_root):
    (data_root / "fashion200k" / "test_queries.txt").write_text(f"{f200k_path('100', 0)} {f200k_path('200', 0)}\n")
    with pytest.raises(AnnotationError, match=r"test_queries.txt:1: .*100_0.jpeg' is not an image of the test"):
        build("fashion200k", data_root, None)
