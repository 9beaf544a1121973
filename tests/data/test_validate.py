"""Every built dataset is validated before training (cirbench/data/validate.py, run by
``DatasetSpec.create`` and ``data verify``): training triplets, test queries, targets in their
galleries, unique gallery entries, ids in range (issue 10 §4)."""

from __future__ import annotations

import json
import os
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest

from cirbench.cli import main
from cirbench.data import (
    DataLocations,
    DatasetSpec,
    DatasetValidationError,
    DatasetValidationWarning,
    Query,
    validate_dataset,
)
from cirbench.data.verify import verify_dataset
from cirbench.testing import RandomDataset
from tests.fixtures.protocols import SMOKE
from tests.fixtures.local_data import (
    css_content,
    save_py2_npy,
    shoe,
    write_cirr,
    write_fashion200k,
    write_fashioniq,
    write_image,
    write_mit_states,
)
from tests.fixtures.data_checks import CSS_FILE, PROTOCOL, REGISTRY, build, write
from tests.fixtures.data_checks import _quiet  # noqa: F401  (pytest fixtures)


# --- validation: the examples of the issue ---------------------------------------------------------------
def mit_states_partial(root: Path) -> Path:
    """MIT-States extracted in part: training nouns apple (only ``red apple``) and pear (only
    ``ripe pear``), so no training noun has two adjectives; the test nouns are complete."""
    write_mit_states(root)
    shutil.rmtree(root / "images" / "green apple")
    shutil.rmtree(root / "images" / "sliced apple")
    write_image(root / "images" / "ripe pear" / "img_0.jpg", 4242)
    return root


# hand: class folders of training nouns with images: "red apple", "ripe pear" (2) for the
# nouns apple and pear (2); "adj apple" is unannotated and "misc" has no space: skipped
MIT_PARTIAL = ("images/: no training noun has two adjectives (images/ has 2 class folder(s) with images for 2 "
               "training noun(s): red apple, ripe pear): cannot build training pairs")


def test_mit_states_extracted_in_part_says_why(tmp_path):
    """It used to fail in training with ``ValueError: high <= 0``."""
    mit_states_partial(tmp_path / "data" / "mit-states")
    with pytest.raises(DatasetValidationError) as err:
        build("mit-states", tmp_path / "data")
    assert MIT_PARTIAL in str(err.value) and "high <= 0" not in str(err.value)
    assert [p.path for p in err.value.problems] == ["images/"]
    report = verify_dataset(REGISTRY.dataset("mit-states"), DataLocations(root=tmp_path / "data"))
    assert any(MIT_PARTIAL in str(p) for p in report.problems), report.problems


def test_a_run_on_a_partial_mit_states_fails_before_training(tmp_path, capsys):
    mit_states_partial(tmp_path / "data" / "mit-states")
    argv = ["run", "--dataset", "mit-states", "--composer", "image-only", "--protocol", "smoke", "--seed", "0",
            "--results", str(tmp_path / "res"), "--cache-dir", str(tmp_path / "cache"), "--threads", "1",
            "--data-root", str(tmp_path / "data")]
    assert main(argv) == 1
    captured = capsys.readouterr()
    assert "DatasetValidationError" in captured.err and "no training noun has two adjectives" in captured.err
    (result,) = list((tmp_path / "res").rglob("seed0.json"))
    record = json.loads(result.read_text())
    assert record["status"] == "failed" and not record.get("train")  # it never trained


# --- validation: each kind on the loaders -----------------------------------------------------------------
def _empty_json_list(root: Path, rels: list[str]) -> None:
    for rel in rels:
        (root / rel).write_text("[]")


def _no_train_css(root: Path) -> None:
    content = css_content()
    content["train"]["mods"] = []
    save_py2_npy(root / CSS_FILE, content)


def _no_train_f200k(root: Path) -> None:
    # hand: "red floral dress" and "green maxi dressdotmark" share no parent caption (each with
    # one word removed), so no training image is modifiable and no pair is drawn
    lines = (root / "labels" / "dress_train_detect_all.txt").read_text().splitlines(keepends=True)
    (root / "labels" / "dress_train_detect_all.txt").write_text(
        "".join(line for line in lines if "/100/" in line or "/104/" in line))


def _no_train_b2w(root: Path) -> None:
    tsv = root / "birds-to-words-v1.0.tsv"
    tsv.write_text(tsv.read_text().replace("\ttrain\t", "\tval\t"))


NO_TRAINING = {  # dataset -> (how to empty its training split, the files the message names)
    "css": (_no_train_css, f"{CSS_FILE} (train mods)"),
    "fashion200k": (_no_train_f200k, "labels/*_train_*.txt"),
    "fashioniq": (lambda r: _empty_json_list(r, [f"captions/cap.{c}.train.json" for c in ("dress", "shirt", "toptee")]),
                  "captions/cap.{dress,shirt,toptee}.train.json"),
    "shoes": (lambda r: (r / "train_im_names.txt").write_text(shoe("clogs", 1) + "\n"),
              "relative_captions_shoes.json (captions whose two images are in train_im_names.txt)"),
    "birds-to-words": (_no_train_b2w, "birds-to-words-v1.0.tsv (rows of split train)"),
    "cirr": (lambda r: _empty_json_list(r, ["cirr/captions/cap.rc2.train.json"]), "cirr/captions/cap.rc2.train.json"),
}


@pytest.mark.parametrize("name", list(NO_TRAINING))
def test_no_training_triplets_is_refused_naming_the_files(name, tmp_path):
    root = write(name, tmp_path / "data")
    empty, files = NO_TRAINING[name]
    empty(root)
    with pytest.raises(DatasetValidationError) as err:
        build(name, tmp_path / "data")
    (problem,) = err.value.problems  # hand: the test split is untouched, so this is the only one
    assert problem.path.startswith(files) and "train_triplets() is empty" in problem.message
    assert f"dataset {name!r} at {root}" in str(err.value)
    report = verify_dataset(REGISTRY.dataset(name), DataLocations(root=tmp_path / "data"))
    assert [str(p) for p in report.problems if "train_triplets()" in str(p)] == [str(problem)]


def test_no_test_queries_is_refused(tmp_path):
    """FashionIQ with empty val captions: no query and (the gallery is the val pairs' images)
    an empty gallery -- hand: two problems; CIRR's gallery is its split file: one."""
    root = write_fashioniq(tmp_path / "a" / "fashioniq")
    _empty_json_list(root, [f"captions/cap.{c}.val.json" for c in ("dress", "shirt", "toptee")])
    with pytest.raises(DatasetValidationError) as err:
        build("fashioniq", tmp_path / "a")
    assert [(p.path, p.message.split(":")[0]) for p in err.value.problems] == [
        ("captions/cap.{dress,shirt,toptee}.val.json", "queries() is empty"), ("gallery()", "is empty")]
    root = write_cirr(tmp_path / "b" / "cirr")
    _empty_json_list(root, ["cirr/captions/cap.rc2.val.json"])
    with pytest.raises(DatasetValidationError) as err:
        build("cirr", tmp_path / "b")
    assert [p.path for p in err.value.problems] == ["cirr/captions/cap.rc2.val.json"]


def _f200k_self_query(root: Path, only: bool) -> None:
    """A test product 300 with one view and a unique caption, and the query ``300_0 300_0``:
    its only correct target is its reference, which is never ranked."""
    p = "women/dresses/casual_and_day_dresses/300/300_0.jpeg"
    write_image(root / p, 3000, size=(16, 24))
    with open(root / "labels" / "dress_test_detect_all.txt", "a") as fh:
        fh.write(f"{p}\t0.9\tpurple velvet dress\n")
    queries = "" if only else (root / "test_queries.txt").read_text()
    (root / "test_queries.txt").write_text(queries + f"{p} {p}\n")


def test_queries_without_a_target_warn_with_the_count(tmp_path, capsys):
    """Hand: the fixture's 3 queries can be answered, the added one cannot: 1 of 4."""
    root = write_fashion200k(tmp_path / "data" / "fashion200k")
    _f200k_self_query(root, only=False)
    with pytest.warns(DatasetValidationWarning) as caught:
        ds = build("fashion200k", tmp_path / "data")
    (w,) = [str(c.message) for c in caught]
    assert "1 of 4 queries have no correct target in the gallery they are ranked against" in w
    assert "Recall@K counts them as misses" in w
    # hand: the captions are equal, so TIRG's different_words gives the last word twice
    assert ("query 3 ('replace dress with dress', reference women/dresses/casual_and_day_dresses/300/300_0.jpeg"
            in w) and "its only correct target is its reference" in w
    assert w.startswith("dataset 'fashion200k': labels/dress_test_detect_all.txt:")
    assert len(ds.queries()) == 4
    report = verify_dataset(REGISTRY.dataset("fashion200k"), DataLocations(root=tmp_path / "data"))
    assert report.ok and len(report.warnings) == 1 and "1 of 4 queries" in str(report.warnings[0])
    assert main(["data", "verify", "fashion200k", "--data-root", str(tmp_path / "data")]) == 0  # a warning only
    out = capsys.readouterr().out
    assert "warning: labels/dress_test_detect_all.txt:9: 1 of 4 queries have no correct target" in out
    assert "OK: no problems" in out


def test_no_answerable_query_is_refused(tmp_path):
    root = write_fashion200k(tmp_path / "data" / "fashion200k")
    _f200k_self_query(root, only=True)
    with pytest.raises(DatasetValidationError, match="none of the 1 queries has a correct target"):
        build("fashion200k", tmp_path / "data")


def test_duplicate_gallery_entries_are_refused(tmp_path):
    """CIRR's val split file naming one path twice (hand: one image, listed 2 times), and two
    entries that are one file through a link inside the root (hand: one pair)."""
    root = write_cirr(tmp_path / "a" / "cirr")
    split = root / "cirr" / "image_splits" / "split.rc2.val.json"
    names = json.loads(split.read_text())
    names["dev-dup-img"] = names["dev-3-img"]
    split.write_text(json.dumps(names))
    with pytest.raises(DatasetValidationError) as err:
        build("cirr", tmp_path / "a")
    (problem,) = err.value.problems
    assert problem.path == "cirr/image_splits/split.rc2.val.json"
    assert "gallery() lists ids more than once: 1 image(s), dev/dev-3-img.png (id" in problem.message
    assert "2 times" in problem.message
    report = verify_dataset(REGISTRY.dataset("cirr"), DataLocations(root=tmp_path / "a"))
    assert any("gallery() lists ids more than once" in str(p) for p in report.problems)

    root = write_cirr(tmp_path / "b" / "cirr")
    (root / "dev" / "dev-7-img.png").unlink()
    os.symlink("dev-6-img.png", root / "dev" / "dev-7-img.png")
    with pytest.raises(DatasetValidationError) as err:
        build("cirr", tmp_path / "b")
    (problem,) = err.value.problems
    assert problem.path == "gallery()" and "1 pair(s) of gallery entries are the same file" in problem.message
    assert "dev/dev-6-img.png and dev/dev-7-img.png" in problem.message


# --- validation: the core, on any dataset ------------------------------------------------------------------
class _TargetsOutside(RandomDataset):
    """Queries ``bad`` get training image 0 as their only target (not in the gallery)."""

    def __init__(self, image_size, bad):
        super().__init__(image_size)
        self._queries = [Query(q.reference, q.text, (0,), q.group) if i in bad else q
                         for i, q in enumerate(self._queries)]


class _NoTriplets(RandomDataset):
    def train_triplets(self):
        return []


class _DuplicateGallery(RandomDataset):
    def gallery(self, group=None):
        g = super().gallery(group)
        return np.concatenate([g, g[:2]])


class _BadIds(RandomDataset):
    def queries(self):
        qs = list(super().queries())
        qs[1] = Query(10_000, qs[1].text, qs[1].targets, qs[1].group)
        qs[5] = Query(qs[5].reference, qs[5].text, (-1,), qs[5].group)
        return qs


def _spec(make) -> DatasetSpec:
    return DatasetSpec("toy", lambda ctx: make(ctx.protocol.image_size))


def test_embedded_datasets_pass_validation():
    for name in ("css-synth", "fashion-synth"):
        result = validate_dataset(REGISTRY.dataset(name).create(SMOKE, None, validate=False))
        assert result.ok and not result.warnings, (name, result)
    assert validate_dataset(RandomDataset(16)).ok


def test_validation_on_any_dataset():
    """Through ``DatasetSpec.create`` (the runner's way); RandomDataset has 8 queries."""
    with pytest.warns(DatasetValidationWarning, match="2 of 8 queries have no correct target"):
        _spec(lambda s: _TargetsOutside(s, bad={0, 3})).create(PROTOCOL, None)
    with pytest.raises(DatasetValidationError, match="none of the 8 queries"):
        _spec(lambda s: _TargetsOutside(s, bad=set(range(8)))).create(PROTOCOL, None)
    with pytest.raises(DatasetValidationError, match=r"train_triplets\(\): train_triplets\(\) is empty"):
        _spec(_NoTriplets).create(PROTOCOL, None)
    with pytest.raises(DatasetValidationError) as err:
        _spec(_DuplicateGallery).create(PROTOCOL, None)
    (problem,) = err.value.problems  # hand: the first two gallery ids appear twice
    assert "lists ids more than once: 2 image(s)" in problem.message
    with pytest.raises(DatasetValidationError) as err:
        _spec(_BadIds).create(PROTOCOL, None)
    (problem,) = err.value.problems  # hand: queries 1 (reference 10000) and 5 (target -1)
    assert problem.message.startswith("2 query(s) name images that do not exist (valid: ints in [0, 20))")
    assert "query 1 (" in problem.message and "query 5 (" in problem.message
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the check path neither raises nor warns
        _spec(_NoTriplets).create(PROTOCOL, None, validate=False)
