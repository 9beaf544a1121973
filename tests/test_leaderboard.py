"""The leaderboard: one table per (protocol hash, dataset), mean ± std over seeds,
failed runs listed, CSV with the same data."""

from __future__ import annotations

import pandas as pd
import pytest

from cirbench.leaderboard import results_frame, summarise, write_leaderboard
from cirbench.results import (
    EvalStats,
    Metrics,
    ParamCounts,
    ProtocolRef,
    ProviderRef,
    RunResult,
    TrainStats,
)


def _result(composer, seed, r1, r5, proto="quick", phash="aaaa", dataset="css-synth", status="ok"):
    ok = status == "ok"
    return RunResult(
        status=status,
        error=None if ok else "RuntimeError: boom",
        protocol=ProtocolRef(proto, phash, 1, {"pretrained": False}),
        dataset=ProviderRef(dataset),
        composer=ProviderRef(composer, plugin="p", distribution="dist-" + composer),
        seed=seed,
        metrics=Metrics({"R@1": r1, "R@5": r5}) if ok else None,
        params=ParamCounts(total=2_500_000, trainable=2_000_000, frozen=500_000),
        train=TrainStats(iterations=10, seconds=10.0 + seed, samples_per_second=1.0, final_loss={}),
        eval=EvalStats(seconds=1.0, num_queries=10, gallery_size=10, queries_per_second=10.0),
        device="cpu: test", versions={}, plugins={}, cirbench_version="0.1.0", git_commit=None,
        created="2026-01-01T00:00:00+00:00", wall_seconds=12.0, peak_memory_mb=100.0,
    )


RESULTS = [
    _result("tirg", 0, 0.50, 0.80),
    _result("tirg", 1, 0.60, 0.90),
    _result("concat", 0, 0.40, 0.70),
    _result("broken", 0, None, None, status="failed"),
    _result("tirg", 0, 0.99, 0.99, phash="bbbb"),  # another protocol version
    _result("tirg", 0, 0.10, 0.20, dataset="other"),
]


def test_summary_means_and_stds_over_seeds():
    df = results_frame(RESULTS)
    part = df[(df.hash == "aaaa") & (df.dataset == "css-synth")]
    s = summarise(part).set_index("composer")
    assert list(s.index) == ["tirg", "concat"]  # sorted by R@1, failed run excluded
    assert s.loc["tirg", "R@1 mean"] == pytest.approx(0.55)
    assert s.loc["tirg", "R@1 std"] == pytest.approx(pd.Series([0.5, 0.6]).std())
    assert s.loc["tirg", "seeds"] == 2 and pd.isna(s.loc["concat", "R@1 std"])
    assert s.loc["tirg", "train_s"] == pytest.approx(10.5)


def test_tables_never_mix_protocols_and_list_failures(tmp_path):
    written = write_leaderboard(RESULTS, tmp_path, plots=True)
    names = sorted(p.name for p in written)
    assert names == ["quick-aaaa--css-synth.md", "quick-aaaa--other.md", "quick-bbbb--css-synth.md"]
    md = (tmp_path / "quick-aaaa--css-synth.md").read_text()
    assert "quick@aaaa" in md and "55.0 ± 7.1" in md and "40.0" in md and "99.0" not in md
    assert "broken seed 0: failed" in md and "2.50M" in md
    csv = pd.read_csv(tmp_path / "quick-aaaa--css-synth.csv")
    assert list(csv["composer"]) == ["tirg", "concat"]
    assert (tmp_path / "quick-aaaa--css-synth.png").stat().st_size > 1000
    index = (tmp_path / "README.md").read_text()
    assert "quick@aaaa" in index and "quick@bbbb" in index


def test_empty_results_give_an_index_saying_so(tmp_path):
    write_leaderboard([], tmp_path)
    assert "No results yet" in (tmp_path / "README.md").read_text()


def _with_eval(result, chance_r1, queries=200, gallery=400):
    import dataclasses

    ev = EvalStats(seconds=1.0, num_queries=queries, gallery_size=gallery, queries_per_second=200.0,
                   extra={"chance": {"R@1": chance_r1, "R@5": 5 * chance_r1}})
    return dataclasses.replace(result, eval=ev)


def test_tables_state_plugin_evaluation_size_chance_and_failure_reasons(tmp_path):
    """Issue 16: the plugin column names plugin and distribution (as `cirbench list`), the
    table states queries, gallery size and the chance level, a failed row says why."""
    import dataclasses

    runs = [_with_eval(dataclasses.replace(r, composer=ProviderRef(r.composer.name, "tirg", "cirbench", "0.1.0")),
                       chance_r1=1 / 400) for r in RESULTS[:3]]
    runs.append(RESULTS[3])  # the failed one: RuntimeError: boom
    write_leaderboard(runs, tmp_path, plots=False)
    md = (tmp_path / "quick-aaaa--css-synth.md").read_text()
    assert "tirg (cirbench 0.1.0)" in md and "| dist-" not in md
    # chance R@1 of one correct target among 400 = 1/400 = 0.25 %
    assert "Evaluation: 200 queries, gallery of 400 images; chance R@1 (a random ranking) = 0.25 %." in md
    assert "broken seed 0: failed (RuntimeError: boom)" in md


def test_plot_whiskers_only_where_seeds_give_an_interval(tmp_path, monkeypatch):
    """A single-seed bar gets no error bar (a zero-length whisker with caps suggests zero
    variance); a chance line is drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.axes

    calls = {"errorbar": [], "axhline": []}
    real_errorbar, real_axhline = matplotlib.axes.Axes.errorbar, matplotlib.axes.Axes.axhline

    def errorbar(self, x, y, *a, **k):
        calls["errorbar"].append(list(x))
        return real_errorbar(self, x, y, *a, **k)

    def axhline(self, y=0, *a, **k):
        calls["axhline"].append(y)
        return real_axhline(self, y, *a, **k)

    monkeypatch.setattr(matplotlib.axes.Axes, "errorbar", errorbar)
    monkeypatch.setattr(matplotlib.axes.Axes, "axhline", axhline)
    runs = [_with_eval(r, chance_r1=0.1) for r in RESULTS[:3]]  # tirg: 2 seeds, concat: 1
    write_leaderboard(runs, tmp_path, plots=True)
    # summary order: tirg (x = 0), concat (x = 1); two R@K columns -> one errorbar call each,
    # each at tirg's bar only (x = 0 for R@1, 0 + width 0.4 for R@5)
    assert calls["errorbar"] == [[0.0], [0.4]]
    assert calls["axhline"] == [pytest.approx(10.0)]  # chance R@1 = 0.1 -> 10 %
