"""Exports for hidden test splits (cirbench/export.py, the cirr and fashioniq loaders' test
splits): the files CIRR's server and FashionIQ's starter kit read, on tiny fixtures.

The composer here is a fixed function (no training): a gallery image embeds to its mean
(normalised) colour plus a constant 1; a query to the same with the text's length added to
the last entry. So every expected ranking can be recomputed independently with plain Python
cosines.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pytest
import torch

from cirbench.composer import Composer, ComposerContext
from cirbench.data.errors import AnnotationError
from cirbench.data.model_inputs import normalize_images
from cirbench.data.locations import DataLocations
from cirbench.export import ExportFormatError, export_predictions, has_hidden_split, rank_hidden
from cirbench.plugins import load_registry
from conftest import SMOKE
from local_data_fixtures import (
    CIRR_TEST1,
    FIQ_TEST_IMAGES,
    write_cirr,
    write_cirr_test1,
    write_fashioniq,
    write_fashioniq_test,
)

REGISTRY = load_registry()
PROTOCOL = dataclasses.replace(SMOKE, image_size=8)


class ColourComposer(Composer):
    """Gallery: [mean R, mean G, mean B, 1]; query: the same with len(text) added to the last."""

    def compose(self, images, texts):
        e = self.embed_target(images)
        e[:, 3] += torch.tensor([float(len(t)) for t in texts])
        return e

    def embed_target(self, images):
        m = images.float().mean(dim=(2, 3))
        return torch.cat([m, torch.ones(len(images), 1)], dim=1)

    def training_loss(self, batch):  # pragma: no cover - never trained
        raise NotImplementedError


@pytest.fixture(autouse=True)
def _quiet(monkeypatch):
    monkeypatch.setenv("CIRBENCH_NO_PROGRESS", "1")
    monkeypatch.delenv("CIRBENCH_DATA", raising=False)
    for name in ("CIRR", "CIRR_SUBSET", "FASHIONIQ", "FASHIONIQ_JOINED"):
        monkeypatch.delenv(f"CIRBENCH_DATA_{name}", raising=False)


def build(name: str, root: Path):
    return REGISTRY.dataset(name).create(PROTOCOL, None, DataLocations(root=root))


def composer() -> ColourComposer:
    return ColourComposer(ComposerContext(PROTOCOL, ["x"], device="cpu")).eval()


def cosine(a, b) -> float:
    na, nb = math.sqrt(sum(x * x for x in a)), math.sqrt(sum(y * y for y in b))
    return sum(x * y for x, y in zip(a, b)) / (na * nb)


def expected_top(dataset_images, query_vec, gallery, reference, k, among=None) -> list[int]:
    """Independent ranking: plain-Python cosines, reference out, (candidates only), ties to
    the earlier gallery position; the top k ids."""
    comp = composer()
    g = comp.embed_target(normalize_images(dataset_images.images(gallery))).tolist()
    order = [p for p, gid in enumerate(gallery) if gid != reference and (among is None or gid in among)]
    order.sort(key=lambda p: (-cosine(query_vec, g[p]), p))
    return [int(gallery[p]) for p in order[:k]]


# --------------------------------------------------------------------------- CIRR test1


@pytest.fixture
def cirr_root(tmp_path) -> Path:
    root = tmp_path / "data"
    write_cirr(root / "cirr")
    write_cirr_test1(root / "cirr")
    return root


def test_cirr_hidden_split_is_apart_from_evaluation(cirr_root):
    ds = build("cirr", cirr_root)
    assert has_hidden_split(ds)
    split = ds.hidden_split()
    val_refs = {q.reference for q in ds.queries()}
    assert len(split.queries) == 7 and [q.key for q in split.queries] == [str(12000 + k) for k in range(7)]
    assert all(q.texts == (f"test change {k}",) for k, q in enumerate(split.queries))
    # the test images live in their own index: names map back to test1 names only
    assert sorted(split.image_names.values()) == sorted(CIRR_TEST1)
    assert len(split.galleries["all"]) == len(CIRR_TEST1)
    # evaluation is unchanged: the fixture's two val queries (dev-0 -> dev-1, dev-6 -> dev-2;
    # its self pair left out), each with its target
    name = {i: Path(e).stem for i, e in enumerate(ds.index.entries)}
    assert sorted(name[r] for r in val_refs) == ["dev-0-img", "dev-6-img"]
    assert sorted(name[t] for q in ds.queries() for t in q.targets) == ["dev-1-img", "dev-2-img"]
    # candidates: the 5 other members of the image set
    q0 = split.queries[0]
    assert len(q0.candidates) == 5 and q0.reference not in q0.candidates


def test_cirr_export_writes_checked_server_files(cirr_root, tmp_path):
    ds = build("cirr", cirr_root)
    split = ds.hidden_split()
    files = export_predictions(composer(), split, tmp_path / "out")
    assert [f.name for f in files] == ["cirr.test1.recall.json", "cirr.test1.recall_subset.json"]
    recall = json.loads(files[0].read_text())
    subset = json.loads(files[1].read_text())
    assert recall["version"] == subset["version"] == "rc2"
    assert (recall["metric"], subset["metric"]) == ("recall", "recall_subset")
    assert set(recall) - {"version", "metric"} == {str(12000 + k) for k in range(7)}
    name_of = split.image_names
    gallery = [int(i) for i in split.galleries["all"]]
    comp = composer()
    for q in split.queries:
        qv = comp.compose(normalize_images(split.images.images([q.reference])), list(q.texts))[0].tolist()
        want = expected_top(split.images, qv, gallery, q.reference, 50)
        assert recall[q.key] == [name_of[i] for i in want]
        want3 = expected_top(split.images, qv, gallery, q.reference, 3, among=set(q.candidates))
        assert subset[q.key] == [name_of[i] for i in want3]
        assert name_of[q.reference] not in recall[q.key]
    assert files[0].stat().st_size < 5_000_000


def test_cirr_export_refuses_a_gallery_smaller_than_the_server_top_k(tmp_path):
    root = tmp_path / "data"
    write_cirr(root / "cirr")
    write_cirr_test1(root / "cirr")
    split_file = root / "cirr" / "cirr" / "image_splits" / "split.rc2.test1.json"
    names = json.loads(split_file.read_text())
    keep = dict(list(names.items())[:45])  # 45 images: fewer than the 50 the server reads
    split_file.write_text(json.dumps(keep))
    caps = root / "cirr" / "cirr" / "captions" / "cap.rc2.test1.json"
    caps.write_text(json.dumps(json.loads(caps.read_text())[:7]))
    split = build("cirr", root).hidden_split()
    out = tmp_path / "out"
    with pytest.raises(ExportFormatError, match=r"cirr\.test1\.recall\.json: query 12000: 44 predictions, "
                       r"the format needs 50"):
        export_predictions(composer(), split, out)
    assert not any(out.iterdir())  # nothing half-written


def test_cirr_server_file_checks_name_the_problem(cirr_root):
    from cirbench_cirr.dataset import check_server_file

    split = build("cirr", cirr_root).hidden_split()
    tops = rank_hidden(composer(), split)
    names = split.image_names
    good = {"version": "rc2", "metric": "recall",
            **{q.key: [names[i] for i in t] for q, t in zip(split.queries, tops["recall"])}}
    check_server_file("f.json", good, split)
    with pytest.raises(ExportFormatError, match="'version' must be 'rc2'"):
        check_server_file("f.json", {**good, "version": "rc1"}, split)
    with pytest.raises(ExportFormatError, match="1 missing"):
        check_server_file("f.json", {k: v for k, v in good.items() if k != "12003"}, split)
    bad = dict(good)
    bad["12001"] = bad["12001"][:-1] + ["not-an-image"]
    with pytest.raises(ExportFormatError, match="f.json: query 12001: 'not-an-image' is not an image"):
        check_server_file("f.json", bad, split)
    bad["12001"] = good["12001"][:-1] + [good["12001"][0]]
    with pytest.raises(ExportFormatError, match="query 12001: a prediction is repeated"):
        check_server_file("f.json", bad, split)
    subset = {"version": "rc2", "metric": "recall_subset",
              **{q.key: [names[i] for i in t] for q, t in zip(split.queries, tops["recall_subset"])}}
    check_server_file("s.json", subset, split)
    outsider = next(n for n in CIRR_TEST1 if n not in {names[c] for c in split.queries[0].candidates}
                    and n != names[split.queries[0].reference])
    subset["12000"] = subset["12000"][:2] + [outsider]
    with pytest.raises(ExportFormatError, match=f"query 12000: '{outsider}' is not an image"):
        check_server_file("s.json", subset, split)


def test_cirr_export_without_test_files_names_them(tmp_path):
    root = tmp_path / "data"
    write_cirr(root / "cirr")
    with pytest.raises(AnnotationError, match=r"cap\.rc2\.test1\.json.*missing"):
        build("cirr", root).hidden_split()


def test_cirr_test1_entry_without_pairid_is_named(cirr_root):
    caps = cirr_root / "cirr" / "cirr" / "captions" / "cap.rc2.test1.json"
    entries = json.loads(caps.read_text())
    del entries[2]["pairid"]
    caps.write_text(json.dumps(entries))
    with pytest.raises(AnnotationError, match=r"cap\.rc2\.test1\.json.*entry 2: field 'pairid'"):
        build("cirr", cirr_root).hidden_split()


# --------------------------------------------------------------------------- FashionIQ test


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


def test_datasets_without_hidden_split_are_refused_by_the_cli(tmp_path, capsys):
    from cirbench.cli import main

    rc = main(["export", "--composer", "concat", "--dataset", "css-synth", "--protocol", "smoke",
               "--out", str(tmp_path / "o"), "--results", str(tmp_path / "r"),
               "--cache-dir", str(tmp_path / "c")])
    assert rc == 2
    assert "has no hidden test split" in capsys.readouterr().err


def test_cli_export_needs_a_saved_model(cirr_root, tmp_path, capsys):
    from cirbench.cli import main

    rc = main(["export", "--composer", "concat", "--dataset", "cirr", "--protocol", "smoke",
               "--data-root", str(cirr_root), "--out", str(tmp_path / "o"),
               "--results", str(tmp_path / "r"), "--cache-dir", str(tmp_path / "c")])
    assert rc == 2
    err = capsys.readouterr().err
    assert "no saved model" in err and "--save-model" in err
