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
