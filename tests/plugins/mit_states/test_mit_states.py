"""The mit-states loader on tiny fixtures written in the canonical layout (from test_local_data.py,
split by issue 12)."""

from __future__ import annotations

import numpy as np

from tests.fixtures.local_loaders import _quiet, data_root  # noqa: F401  (pytest fixtures)
from tests.fixtures.local_loaders import build


def test_mit_states_follows_tirg(data_root):
    ds = build("mit-states", data_root, None)
    caps = ds.captions
    assert "adj apple" not in caps and ds.num_images == 12
    train = {i for t in ds.train_triplets() for i in (t.reference, t.target)}
    assert all(caps[i].endswith("apple") for i in train)
    assert {caps[i].split()[1] for i in ds.gallery()} == {"clock", "orange"}
    trips = ds.train_triplets()
    for a, b in zip(trips[0::2], trips[1::2]):  # pairs share the source, adjectives differ
        assert a.reference == b.reference and a.text != b.text
        assert caps[a.target] == f"{a.text} apple"
    # queries: each test image x each other adjective of its noun
    q = ds.queries()
    n_expected = sum(len({c.split()[0] for c in set(caps[j] for j in ds.gallery()) if c.endswith(caps[i].split()[1])}) - 1
                     for i in ds.gallery())
    assert len(q) == n_expected
    for x in q:
        assert x.text != caps[x.reference].split()[0]
        assert {caps[t] for t in x.targets} == {f"{x.text} {caps[x.reference].split()[1]}"}
        assert set(x.targets) == {j for j in ds.gallery() if caps[j] == f"{x.text} {caps[x.reference].split()[1]}"}
    s = ds.sample_triplets(np.random.default_rng(0), 9)
    assert len(s) == 9 and all(a.reference == b.reference for a, b in zip(s[0:8:2], s[1:8:2]))
