"""CIRR's hidden test split and the files its evaluation server reads (cirbench/export.py with the
cirr loader)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cirbench.data.errors import AnnotationError
from cirbench.data.model_inputs import normalize_images
from cirbench.export import ExportFormatError, export_predictions, has_hidden_split, rank_hidden
from tests.fixtures.local_data import CIRR_TEST1, write_cirr, write_cirr_test1
from tests.fixtures.export import _quiet, cirr_root  # noqa: F401  (pytest fixtures)
from tests.fixtures.export import build, composer, expected_top


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
