"""The results store and the grid runner: atomic writes, skip, force, failure isolation,
divergence, what every result records."""

from __future__ import annotations

import errno
import json
import os
import tempfile

import pytest
import torch

import cirbench
from cirbench import ComposerSpec, hookimpl
from cirbench.plugins import load_registry
import cirbench.results as results_mod
from cirbench.results import ResultsNotWritableError, ResultsStore, RunKey, read_result
from cirbench.runner import Runner, RunOptions
from cirbench.storage import atomic_write_json


@pytest.fixture
def registry(pixel_mean_cls):
    class Broken(pixel_mean_cls):
        def training_loss(self, batch):
            raise RuntimeError("boom in training_loss")

    class Nan(pixel_mean_cls):
        def training_loss(self, batch):
            return {"base": super().training_loss(batch)["base"] * float("nan")}

    class TestPlugin:
        @hookimpl
        def cirbench_composers(self):
            return [
                ComposerSpec("pixel-mean", pixel_mean_cls),
                ComposerSpec("broken", Broken),
                ComposerSpec("nan", Nan),
                ComposerSpec("not-a-composer", lambda ctx: torch.nn.Linear(1, 1)),
            ]

    return load_registry(extra_plugins=[("test-plugin", TestPlugin())])


@pytest.fixture
def runner(registry, tmp_path, css_tiny, smoke):
    r = Runner(registry, RunOptions(results=tmp_path / "results", cache_dir=tmp_path / "cache", device=torch.device("cpu")))
    r._datasets[(smoke.hash, "css-synth")] = css_tiny  # reuse the session's dataset
    return r


def test_failure_is_isolated_and_recorded(runner, smoke):
    names = ["broken", "pixel-mean", "nan", "not-a-composer"]
    report = runner.run_grid(smoke, ["css-synth"], names, [0])
    status = {k.composer: runner.store.read(k).status for k in report.ran}
    assert status == {"broken": "failed", "pixel-mean": "ok", "nan": "diverged", "not-a-composer": "failed"}
    broken = runner.store.read(RunKey(smoke, "css-synth", "broken", 0))
    assert "boom in training_loss" in broken.error and "Traceback" in broken.traceback
    bad_type = runner.store.read(RunKey(smoke, "css-synth", "not-a-composer", 0))
    assert "expected a cirbench.Composer" in bad_type.error
    assert [k.composer for k, _ in report.failed] == ["broken", "not-a-composer"]
    assert [k.composer for k in report.diverged] == ["nan"]


def test_result_records_provenance(runner, smoke, css_tiny):
    runner.run_grid(smoke, ["css-synth"], ["pixel-mean"], [7])
    key = RunKey(smoke, "css-synth", "pixel-mean", 7)
    path = runner.store.path(key)
    assert path == runner.store.root / f"smoke@{smoke.hash}" / "css-synth" / "pixel-mean" / "seed7.json"
    r = json.loads(path.read_text())
    assert r["status"] == "ok" and r["seed"] == 7
    assert r["protocol"]["name"] == "smoke" and r["protocol"]["hash"] == smoke.hash
    assert r["protocol"]["fields"]["iterations"] == smoke.iterations
    assert set(r["metrics"]["overall"]) == {f"R@{k}" for k in smoke.ks}
    assert set(r["metrics"]["groups"]) == {"add", "remove", "change"}
    # pixel-mean (tests/conftest.py) counted by hand: EmbeddingBag (V + 1) x d, Linear 48 -> d
    # (weight and bias), the normaliser's one scale; V = distinct words of the training texts
    d, v = smoke.embed_dim, len({w for t in css_tiny.train_texts() for w in t.split()})
    expected = (v + 1) * d + (48 * d + d) + 1
    assert r["params"] == {"total": expected, "trainable": expected, "frozen": 0, "frozen_pretrained": 0}
    assert r["versions"]["torch"] == torch.__version__.split("+")[0] or r["versions"]["torch"] == torch.__version__
    assert r["device"].startswith("cpu") and r["cirbench_version"] == cirbench.__version__
    assert "git_commit" in r and r["pretrained_weights"] == []
    assert r["train"]["seconds"] > 0 and r["eval"]["queries_per_second"] > 0 and r["peak_memory_mb"] > 0
    assert r["composer"]["plugin"] == "test-plugin" and r["dataset"]["distribution"] == "cirbench"
    assert not runner.store.checkpoint_path(key).exists()


def test_existing_results_are_skipped_and_force_redoes_them(runner, smoke):
    runner.run_grid(smoke, ["css-synth"], ["pixel-mean", "broken"], [0])
    ok_path = runner.store.path(RunKey(smoke, "css-synth", "pixel-mean", 0))
    before = ok_path.stat().st_mtime_ns
    report = runner.run_grid(smoke, ["css-synth"], ["pixel-mean", "broken"], [0])
    assert [k.composer for k in report.skipped] == ["pixel-mean"]
    assert [k.composer for k in report.ran] == ["broken"]  # failed runs are retried
    assert ok_path.stat().st_mtime_ns == before
    runner.options.force = True
    report = runner.run_grid(smoke, ["css-synth"], ["pixel-mean"], [0])
    assert [k.composer for k in report.ran] == ["pixel-mean"]
    assert ok_path.stat().st_mtime_ns != before


def test_atomic_write_keeps_old_file_when_interrupted(tmp_path, monkeypatch):
    path = tmp_path / "r.json"
    atomic_write_json(path, {"v": 1})

    def crash(src, dst):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(KeyboardInterrupt):
        atomic_write_json(path, {"v": 2})
    assert json.loads(path.read_text()) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]  # no temporary file left


def test_atomic_write_refuses_non_finite_numbers(tmp_path):
    with pytest.raises(ValueError):
        atomic_write_json(tmp_path / "r.json", {"v": float("nan")})
    assert not (tmp_path / "r.json").exists()


def test_store_ignores_unreadable_files_with_a_warning(tmp_path, caplog):
    store = ResultsStore(tmp_path)
    bad = tmp_path / "p@h" / "d" / "c" / "seed0.json"
    bad.parent.mkdir(parents=True)
    bad.write_text("{not json")
    assert list(store) == []
    assert str(bad) in caplog.text


def test_interrupted_run_resumes_from_checkpoint(runner, smoke, monkeypatch):
    import dataclasses

    import cirbench.runner as runner_mod
    from cirbench import train as train_mod

    proto = dataclasses.replace(smoke, iterations=4)
    runner._datasets[(proto.hash, "css-synth")] = runner._datasets[(smoke.hash, "css-synth")]
    runner.options.checkpoint_every = 2
    key = RunKey(proto, "css-synth", "pixel-mean", 0)
    real_train = train_mod.train

    def interrupted(*args, **kwargs):
        real_train(*args, **kwargs, stop_after=2)
        raise KeyboardInterrupt  # the user pressed Ctrl-C after step 2

    monkeypatch.setattr(runner_mod, "train", interrupted)
    with pytest.raises(KeyboardInterrupt):
        runner.run_one(key)
    assert runner.store.checkpoint_path(key).exists() and runner.store.read(key) is None
    monkeypatch.setattr(runner_mod, "train", real_train)
    result = runner.run_one(key)
    assert result.status == "ok" and result.train.resumed_from == 2
    assert not runner.store.checkpoint_path(key).exists()


def test_an_unwritable_results_folder_stops_the_grid_before_anything_is_built(runner, smoke, monkeypatch):
    runner.store.root.write_text("a file, not a folder")
    runner._datasets.clear()  # building the dataset would also show that work started
    built = []
    monkeypatch.setattr(runner, "dataset", lambda *a: built.append(a))
    with pytest.raises(ResultsNotWritableError, match=f"cannot write results in {runner.store.root}"):
        runner.run_grid(smoke, ["css-synth"], ["pixel-mean"], [0])
    assert built == [] and runner.store.root.read_text() == "a file, not a folder"


def _disk_full_under(root, monkeypatch):
    """Writing any file under ``root`` fails as on a full disk (what the store writes with)."""
    real = results_mod.atomic_write_json

    def write(path, obj):
        if os.fspath(path).startswith(root):
            raise OSError(errno.ENOSPC, "No space left on device", os.fspath(path))
        real(path, obj)

    monkeypatch.setattr(results_mod, "atomic_write_json", write)


def test_a_result_that_cannot_be_written_is_kept_in_a_fallback_file(runner, smoke, monkeypatch, caplog):
    _disk_full_under(str(runner.store.root), monkeypatch)
    report = runner.run_grid(smoke, ["css-synth"], ["pixel-mean", "broken"], [0])
    assert [k.composer for k in report.ran] == ["pixel-mean", "broken"]  # the grid went on
    assert [u.key.composer for u in report.unsaved] == ["pixel-mean", "broken"]
    assert [k.composer for k, _ in report.failed] == ["broken"]
    ok = report.unsaved[0]
    assert ok.path == runner.store.path(ok.key) and not ok.path.exists()
    assert ok.fallback == runner.options.cache_dir / "unsaved-results" / ok.key.relpath().with_suffix(".json")
    saved = read_result(ok.fallback)
    assert saved == ok.result and saved.status == "ok"
    assert set(saved.metrics.overall) == {f"R@{k}" for k in smoke.ks}
    assert "No space left on device" in caplog.text and str(ok.fallback) in caplog.text
    # the cache cannot be written either: the system's temporary folder
    runner.options.cache_dir = runner.store.root.parent / "cache-file"
    runner.options.cache_dir.write_text("not a folder")
    monkeypatch.setattr(tempfile, "tempdir", str(runner.store.root.parent / "systmp"))
    report = runner.run_grid(smoke, ["css-synth"], ["pixel-mean"], [0])
    fallback = report.unsaved[0].fallback
    assert fallback == runner.store.root.parent / "systmp" / "cirbench" / "unsaved-results" / ok.key.relpath().with_suffix(".json")
    assert read_result(fallback) == report.unsaved[0].result


def test_a_malformed_result_counts_as_not_done(runner, smoke, caplog):
    key = RunKey(smoke, "css-synth", "pixel-mean", 0)
    path = runner.store.path(key)
    path.parent.mkdir(parents=True)
    path.write_text("null")
    report = runner.run_grid(smoke, ["css-synth"], ["pixel-mean"], [0])
    assert report.ran == [key] and report.skipped == []
    assert f"ignoring result file {path}: expected a JSON object, got null" in caplog.text
    assert runner.store.read(key).status == "ok"


def test_every_ok_result_keeps_its_per_query_ranks(runner, smoke, css_tiny):
    """Issue 13: ranks and top-K ids beside the result, referenced with a checksum, in the
    dataset's queries() order; Recall@K recomputed from them equals the stored metrics."""
    import numpy as np

    runner.run_grid(smoke, ["css-synth"], ["pixel-mean"], [0])
    key = RunKey(smoke, "css-synth", "pixel-mean", 0)
    result = runner.store.read(key)
    assert result.ranks is not None and result.ranks.path.endswith("seed0.ranks.npz")
    assert runner.store.ranks_path(key).exists()
    qr = runner.store.load_ranks(result)
    queries = list(css_tiny.queries())
    assert qr.k == max(smoke.ks) and len(qr.ranks) == len(queries) == result.eval.num_queries
    assert list(qr.references) == [q.reference for q in queries]
    assert list(qr.groups) == [q.group for q in queries]
    assert qr.recall(smoke.ks) == pytest.approx(result.metrics.overall, abs=1e-12)
    for g, values in result.metrics.groups.items():
        assert qr.recall(smoke.ks, g) == pytest.approx(values, abs=1e-12)
    # the top-K lists agree with the ranks: a query hits at K exactly when a target is in its top K
    for q, rank, top in zip(queries, qr.ranks, qr.top_k):
        for k in smoke.ks:
            assert (rank < k) == bool(set(top[:k].tolist()) & (set(q.targets) - {q.reference}))
        assert q.reference not in top.tolist()
    assert np.all(qr.top_k >= 0)  # css-synth's gallery is larger than K


def test_ranks_that_cannot_be_written_leave_an_ok_result_without_them(runner, smoke, monkeypatch, caplog):
    def no_space(key, ranks):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(runner.store, "write_ranks", no_space)
    runner.run_grid(smoke, ["css-synth"], ["pixel-mean"], [3])
    result = runner.store.read(RunKey(smoke, "css-synth", "pixel-mean", 3))
    assert result.status == "ok" and result.ranks is None
    assert "could not write its per-query ranks" in caplog.text and "No space left" in caplog.text
