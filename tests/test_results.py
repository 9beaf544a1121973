"""The result record and the results store: one schema, checked in one place; a bad file is
skipped with a warning naming the file and the field; the store checks it can write before a
run and never reads a result into the wrong cell."""

from __future__ import annotations

import json
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cirbench.protocol import BUILTIN_PROTOCOLS
from cirbench.results import (
    SCHEMA_VERSION,
    EvalStats,
    Metrics,
    ParamCounts,
    ProtocolRef,
    ProviderRef,
    ResultSchemaError,
    ResultsNotWritableError,
    ResultsStore,
    RunKey,
    RunResult,
    SavedModel,
    TrainStats,
    read_result,
)
from cirbench.storage import atomic_write_json

SMOKE = next(p for p in BUILTIN_PROTOCOLS if p.name == "smoke")
KEY = RunKey(SMOKE, "css-synth", "tirg", 0)


def _ok(seed: int = 0, **changes) -> RunResult:
    """A complete ok result of ``KEY`` (with ``seed``), as the runner writes one."""
    fields = dict(
        status="ok",
        protocol=ProtocolRef.of(SMOKE),
        dataset=ProviderRef("css-synth", "css-synth", "cirbench", "0.1.0", facts={"num_images": 420}),
        composer=ProviderRef("tirg", "tirg", "cirbench", "0.1.0"),
        seed=seed,
        metrics=Metrics({"R@1": 0.25, "R@5": 0.5, "R@10": 1.0}, {"add": {"R@1": 0.5, "R@5": 0.75, "R@10": 1.0}}),
        params=ParamCounts(total=10, trainable=7, frozen=3),
        train=TrainStats(iterations=4, seconds=1.5, samples_per_second=20.0, final_loss={"base": 0.5},
                         history=[{"step": 4, "base": 0.5}]),
        eval=EvalStats(seconds=0.5, num_queries=150, gallery_size=180, queries_per_second=300.0),
        device="cpu: x86_64, 2 threads",
        versions={"python": "3.11.7", "torch": "2.14.1"},
        plugins={"cirbench": "0.1.0"},
        cirbench_version="0.1.0",
        git_commit="abc123",
        created="2026-11-30T10:47:12+00:00",
        wall_seconds=2.5,
        peak_memory_mb=700.0,
    )
    fields.update(changes)
    return RunResult(**fields)


def _write(path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


# --- the record ---------------------------------------------------------------------------------


def test_json_layout_of_an_ok_and_a_failed_result():
    obj = _ok().to_json()
    # the layout of schema 1, key for key (optional parts left out when absent)
    assert set(obj) == {"schema", "status", "error", "protocol", "dataset", "composer", "seed", "metrics",
                        "params", "pretrained_weights", "device", "versions", "plugins", "cirbench_version",
                        "git_commit", "created", "wall_seconds", "peak_memory_mb", "train", "eval"}
    assert obj["schema"] == SCHEMA_VERSION == 1
    assert obj["protocol"] == {"name": "smoke", "hash": SMOKE.hash, "version": SMOKE.version,
                               "fields": SMOKE.as_dict()}
    assert obj["composer"] == {"name": "tirg", "plugin": "tirg", "distribution": "cirbench", "version": "0.1.0"}
    assert obj["eval"] == {"seconds": 0.5, "num_queries": 150, "gallery_size": 180, "queries_per_second": 300.0}
    failed = _ok(status="failed", error="RuntimeError: boom", traceback="Traceback ...", metrics=None,
                 train=None, eval=None, composer=ProviderRef("gone")).to_json()
    assert failed["metrics"] is None and "train" not in failed and "eval" not in failed
    assert failed["traceback"] == "Traceback ..." and failed["composer"] == {"name": "gone"}
    assert RunResult.from_json(failed).composer == ProviderRef("gone")


def test_eval_keeps_further_measurements():
    obj = _ok(eval=EvalStats(0.5, 150, 180, 300.0, extra={"embed_images_per_second": 900.0})).to_json()
    assert obj["eval"]["embed_images_per_second"] == 900.0
    back = RunResult.from_json(json.loads(json.dumps(obj)))
    assert back.eval.extra == {"embed_images_per_second": 900.0} and back.eval.seconds == 0.5
    with pytest.raises(ValueError, match="seconds"):
        EvalStats(0.5, 150, 180, 300.0, extra={"seconds": 1.0})


def test_status_rules():
    with pytest.raises(ResultSchemaError, match="'status': expected one of ok, failed, diverged"):
        _ok(status="done")
    with pytest.raises(ResultSchemaError, match="missing field 'metrics' .required when status is ok"):
        _ok(metrics=None)
    with pytest.raises(ResultSchemaError, match="'error': expected a string when status is failed"):
        _ok(status="failed")


_names = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=8)
_numbers = st.one_of(st.integers(-10**6, 10**6), st.floats(allow_nan=False, allow_infinity=False))
_recalls = st.dictionaries(st.sampled_from(["R@1", "R@5", "R@10", "R@50"]), st.floats(0, 1), min_size=1)


@st.composite
def results(draw) -> RunResult:
    status = draw(st.sampled_from(["ok", "failed", "diverged"]))
    ok = status == "ok"
    counts = draw(st.tuples(st.integers(0, 10**9), st.integers(0, 10**9)))
    return _ok(
        seed=draw(st.integers(0, 2**40)),
        status=status,
        error=None if ok else draw(st.text(max_size=30)),
        composer=ProviderRef(draw(_names), draw(st.none() | _names), draw(st.none() | _names)),
        metrics=Metrics(draw(_recalls), draw(st.dictionaries(_names, _recalls, max_size=3))) if ok or draw(
            st.booleans()) else None,
        params=ParamCounts(sum(counts), *counts) if ok or draw(st.booleans()) else None,
        train=TrainStats(draw(st.integers(0, 10**6)), draw(st.floats(0, 1e6)), draw(st.floats(0, 1e6)),
                         draw(st.dictionaries(_names, _numbers, max_size=3)),
                         draw(st.lists(st.dictionaries(_names, _numbers, max_size=3), max_size=3)),
                         draw(st.integers(0, 10**6))) if ok or draw(st.booleans()) else None,
        eval=None if not ok else EvalStats(draw(st.floats(0, 1e6)), draw(st.integers(0, 10**6)),
                                           draw(st.integers(0, 10**6)), draw(st.floats(0, 1e6)),
                                           draw(st.dictionaries(_names.filter(lambda n: n not in EvalStats._KNOWN),
                                                                _numbers, max_size=2))),
        saved_model=draw(st.none() | st.builds(SavedModel, _names, st.integers(0, 10**12))),
        traceback=draw(st.none() | st.text(max_size=30)),
        git_commit=draw(st.none() | _names),
        pretrained_weights=draw(st.lists(_names, max_size=3)),
        wall_seconds=draw(st.floats(0, 1e6)),
    )


@settings(max_examples=150, deadline=None)
@given(results())
def test_every_valid_record_reads_back_identically(result):
    text = json.dumps(result.to_json(), allow_nan=False)
    assert RunResult.from_json(json.loads(text)) == result


# Every field the schema requires, and where it sits: deleting it, or giving it a value of the
# wrong JSON type, makes the file unreadable with an error naming that field.
REQUIRED = [
    "schema", "status", "error", "protocol", "protocol.name", "protocol.hash", "protocol.version",
    "protocol.fields", "dataset", "dataset.name", "composer", "composer.name", "seed", "metrics",
    "metrics.overall", "metrics.groups", "params", "params.total", "params.trainable", "params.frozen",
    "pretrained_weights", "device", "versions", "plugins", "cirbench_version", "git_commit", "created",
    "wall_seconds", "peak_memory_mb", "train", "train.iterations", "train.seconds",
    "train.samples_per_second", "train.final_loss", "train.history", "train.resumed_from", "eval",
    "eval.seconds", "eval.num_queries", "eval.gallery_size", "eval.queries_per_second",
]
# Optional fields: absent is fine, the wrong type is not.
OPTIONAL = ["dataset.plugin", "dataset.distribution", "dataset.version", "dataset.facts", "saved_model",
            "saved_model.path", "saved_model.bytes", "traceback"]


def _parent(obj: dict, path: str) -> tuple[dict, str]:
    *head, last = path.split(".")
    for part in head:
        obj = obj[part]
    return obj, last


@settings(max_examples=80, deadline=None)
@given(st.sampled_from(REQUIRED + OPTIONAL), st.booleans())
def test_a_missing_or_mistyped_field_is_named(path, delete):
    obj = _ok(saved_model=SavedModel("p/seed0.model.pt", 3), traceback=None).to_json()
    obj["traceback"] = "t"
    parent, name = _parent(obj, path)
    if delete:
        del parent[name]
        if path in OPTIONAL and path != "saved_model.path" and path != "saved_model.bytes":
            RunResult.from_json(obj)  # an optional field may be absent
            return
        with pytest.raises(ResultSchemaError, match=f"missing field '{path}'"):
            RunResult.from_json(obj)
    else:
        parent[name] = "x" if isinstance(parent[name], list) else []
        with pytest.raises(ResultSchemaError, match=f"'{path}'"):
            RunResult.from_json(obj)


@pytest.mark.parametrize("path,value,expected", [
    ("seed", "a", "field 'seed': expected an integer >= 0, got string \"a\""),
    ("seed", -1, "field 'seed': expected an integer >= 0, got integer -1"),
    ("seed", True, "field 'seed': expected an integer >= 0, got boolean true"),
    ("schema", 99, "unknown schema version 99 (this cirbench reads schema 1"),
    ("metrics.overall.R@1", "0.5", "field 'metrics.overall.R@1': expected a finite number"),
    ("metrics.groups.add", [], "field 'metrics.groups.add': expected an object, got array"),
    ("params.total", 1.5, "field 'params.total': expected an integer >= 0, got number 1.5"),
    ("train.history", [{"step": "x"}], "field 'train.history[0].step': expected a finite number"),
    ("pretrained_weights", [3], "field 'pretrained_weights[0]': expected a string, got integer 3"),
    ("versions", {"torch": 2}, "field 'versions.torch': expected a string, got integer 2"),
])
def test_mistyped_values_are_named(path, value, expected):
    obj = _ok().to_json()
    parent, name = _parent(obj, path)
    parent[name] = value
    with pytest.raises(ResultSchemaError) as err:
        RunResult.from_json(obj)
    assert expected in str(err.value)


@pytest.mark.parametrize("text,reason", [
    ("null", "expected a JSON object, got null"),
    ("42", "expected a JSON object, got integer 42"),
    ("[]", "expected a JSON object, got array"),
    ("{}", "missing field 'schema'"),
    ("{not json", "unreadable result file"),
    (b"\xff\xfe{", "unreadable result file"),
    ("MISSING_OVERALL", "missing field 'metrics.overall'"),
    ("SEED_A", "field 'seed': expected an integer >= 0, got string \"a\""),
    ("SCHEMA_99", "unknown schema version 99"),
])
def test_bad_files_read_as_none_with_a_warning_naming_them(tmp_path, caplog, text, reason):
    obj = _ok().to_json()
    if text == "MISSING_OVERALL":
        del obj["metrics"]["overall"]
    elif text == "SEED_A":
        obj["seed"] = "a"
    elif text == "SCHEMA_99":
        obj["schema"] = 99
    content = json.dumps(obj) if text in ("MISSING_OVERALL", "SEED_A", "SCHEMA_99") else text
    store = ResultsStore(tmp_path)
    path = store.path(KEY)
    path.parent.mkdir(parents=True)
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    assert read_result(path) is None
    assert f"{path}" in caplog.text and reason in caplog.text
    caplog.clear()
    assert store.read(KEY) is None and list(store) == []
    assert f"{path}" in caplog.text and reason in caplog.text


def test_store_round_trip_and_iteration_skip_bad_files(tmp_path, caplog):
    store = ResultsStore(tmp_path)
    good = [_ok(seed=s) for s in (0, 1)]
    for r in good:
        store.write(RunKey(SMOKE, "css-synth", "tirg", r.seed), r)
    _write(store.path(RunKey(SMOKE, "css-synth", "tirg", 2)), "null")
    _write(store.path(RunKey(SMOKE, "css-synth", "concat", 0)), "42")
    assert store.read(KEY) == good[0]
    assert list(store) == good  # the two bad files skipped...
    assert "concat/seed0.json" in caplog.text and "tirg/seed2.json" in caplog.text  # ...with a warning each
    assert json.loads(store.path(KEY).read_text()) == good[0].to_json()


def test_a_result_in_the_wrong_place_is_not_read_as_another_runs(tmp_path, caplog):
    store = ResultsStore(tmp_path)
    misplaced = store.path(RunKey(SMOKE, "css-synth", "tirg", 5))
    atomic_write_json(misplaced, _ok(seed=0).to_json())  # seed 0's result in seed5.json
    assert store.read(RunKey(SMOKE, "css-synth", "tirg", 5)) is None
    assert str(misplaced) in caplog.text and "not of tirg on css-synth" in caplog.text
    assert list(store) == []
    assert "which belongs in" in caplog.text


def test_write_refuses_another_runs_result_and_bad_records(tmp_path):
    store = ResultsStore(tmp_path)
    with pytest.raises(ValueError, match="written as the result of"):
        store.write(RunKey(SMOKE, "css-synth", "tirg", 1), _ok(seed=0))
    with pytest.raises(ResultSchemaError, match="'params.total'"):
        store.write(KEY, _ok(params=ParamCounts("10", 7, 3)))
    assert not store.path(KEY).exists()


def test_run_key_refuses_a_negative_or_non_integer_seed():
    for seed in (-1, 1.0, True, "0"):
        with pytest.raises(ValueError, match="seed must be an integer >= 0"):
            RunKey(SMOKE, "css-synth", "tirg", seed)


# --- can the results folder be written? --------------------------------------------------------


def test_writable_check_passes_and_leaves_no_file(tmp_path):
    store = ResultsStore(tmp_path / "new" / "results")
    keys = [KEY, RunKey(SMOKE, "css-synth", "concat", 1)]
    store.check_writable(keys)
    # the runs' folders stay, empty (removing them would race with another runner); no file
    assert [p for p in tmp_path.rglob("*") if not p.is_dir()] == []
    assert all(store.path(k).parent.is_dir() for k in keys)
    (tmp_path / "res").mkdir()
    ResultsStore(tmp_path / "res").check_writable([KEY])
    assert [p for p in (tmp_path / "res").rglob("*") if not p.is_dir()] == []


def test_writable_checks_of_several_runners_at_once_never_fail(tmp_path):
    """Two runners probing the same new folders at the same moment (the grid's check before
    training): the old check removed the folders it had made, under the other's feet, and the
    other exited 2 ("cannot write results")."""
    from concurrent.futures import ThreadPoolExecutor

    def probe(i):
        store = ResultsStore(tmp_path / f"round{i // 8}")
        store.check_writable([KEY, RunKey(SMOKE, "css-synth", "concat", i % 3)])

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(probe, range(8 * 25)))  # 25 rounds of 8 simultaneous probes; raises if one fails


def test_a_results_path_that_is_a_file_is_not_writable(tmp_path):
    (tmp_path / "res").write_text("not a folder")
    with pytest.raises(ResultsNotWritableError, match=f"cannot write results in {tmp_path / 'res'}"):
        ResultsStore(tmp_path / "res").check_writable()
    with pytest.raises(ResultsNotWritableError, match="Not a directory|File exists"):
        ResultsStore(tmp_path / "res" / "sub").check_writable()
    assert (tmp_path / "res").read_text() == "not a folder"


def test_a_file_blocking_a_runs_folder_is_found(tmp_path):
    store = ResultsStore(tmp_path / "res")
    blocker = tmp_path / "res" / SMOKE.label
    _write(blocker, "a file where the protocol's folder goes")
    store.check_writable()  # the folder itself is fine...
    with pytest.raises(ResultsNotWritableError, match=SMOKE.label):
        store.check_writable([KEY])  # ...the run's sub-folder cannot be made
    assert blocker.read_text() == "a file where the protocol's folder goes"


@pytest.mark.skipif(os.geteuid() == 0 if hasattr(os, "geteuid") else True,
                    reason="root writes into read-only folders; the file-blocking tests cover this case")
def test_a_read_only_folder_is_not_writable(tmp_path):
    res = tmp_path / "res"
    res.mkdir()
    res.chmod(0o500)
    try:
        with pytest.raises(ResultsNotWritableError, match="Permission denied"):
            ResultsStore(res).check_writable()
    finally:
        res.chmod(0o700)


def test_ranks_file_round_trip_checksum_and_old_results(tmp_path):
    """Issue 13: the per-query ranks file is written atomically beside the result, read back
    only when its SHA-256 matches; a result without one (older) reads as before."""
    import dataclasses

    from cirbench.results import QueryRanks, RanksFileError

    store = ResultsStore(tmp_path)
    result = _ok()
    key = KEY
    qr = QueryRanks([0, 3, 7], [[5, 1], [2, 4], [9, -1]], ["add", "add", "remove"], [10, 11, 12])
    ref = store.write_ranks(key, qr)
    assert ref.num_queries == 3 and ref.k == 2 and ref.path.endswith("seed0.ranks.npz")
    with_ranks = dataclasses.replace(result, ranks=ref)
    store.write(key, with_ranks)
    back = store.read(key)
    assert back.ranks == ref
    loaded = store.load_ranks(back)
    assert loaded.ranks.tolist() == [0, 3, 7] and loaded.top_k.tolist() == [[5, 1], [2, 4], [9, -1]]
    assert loaded.groups.tolist() == ["add", "add", "remove"]
    # recall from ranks: R@1 = 1/3 (rank 0 only), R@5 = 2/3 (ranks 0 and 3); add: R@5 = 2/2
    assert loaded.recall((1, 5)) == pytest.approx({"R@1": 1 / 3, "R@5": 2 / 3})
    assert loaded.recall((5,), "add") == {"R@5": 1.0}
    assert store.load_ranks(result) is None  # an older result: no ranks
    path = store.ranks_path(key)
    path.write_bytes(path.read_bytes() + b"x")
    with pytest.raises(RanksFileError, match="SHA-256"):
        store.load_ranks(back)
    path.unlink()
    with pytest.raises(RanksFileError, match="seed0.ranks.npz"):
        store.load_ranks(back)
    with pytest.raises(ValueError, match="same queries"):
        QueryRanks([0, 1], [[1]], ["a", "b"], [0, 1])


@settings(max_examples=30, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 60), st.sampled_from(["add", "remove"])), min_size=1, max_size=40),
       st.lists(st.integers(1, 50), min_size=1, max_size=4, unique=True))
def test_recall_from_stored_ranks_is_the_metrics_recall(rows, ks):
    """QueryRanks.recall agrees with cirbench.metrics.recall_at_k / recall_by_group, also after
    a round trip through the file's bytes."""
    from cirbench.metrics import format_recalls, recall_at_k, recall_by_group
    from cirbench.results import QueryRanks

    ranks, groups = [r for r, _ in rows], [g for _, g in rows]
    qr = QueryRanks.from_bytes(QueryRanks(ranks, [[0]] * len(ranks), groups, range(len(ranks))).to_bytes())
    assert qr.recall(ks) == format_recalls(recall_at_k(ranks, ks))
    for g, values in recall_by_group(ranks, groups, ks).items():
        assert qr.recall(ks, g) == format_recalls(values)


def test_frozen_pretrained_count_round_trips_and_is_optional():
    """Composer.parameter_counts gives frozen_pretrained (issue 11); older files lack it."""
    from cirbench.results import ParamCounts

    new = ParamCounts.from_json({"total": 38, "trainable": 15, "frozen": 23, "frozen_pretrained": 22})
    assert new.frozen_pretrained == 22 and ParamCounts.from_json(new.to_json()) == new
    old = ParamCounts.from_json({"total": 3, "trainable": 2, "frozen": 1})
    assert old.frozen_pretrained is None and "frozen_pretrained" not in old.to_json()
    with pytest.raises(Exception, match="params.frozen_pretrained"):
        ParamCounts.from_json({"total": 3, "trainable": 2, "frozen": 1, "frozen_pretrained": -1})
