"""benchmarks/ranking.py prints, in one run, the ratio to the floor, queries/s and peak memory
of rank_queries and of rank_and_top_k for every size asked (a smoke run on tiny sizes: the
figures themselves are machine-dependent and not asserted)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def load_benchmark():
    spec = importlib.util.spec_from_file_location("ranking_benchmark", ROOT / "benchmarks" / "ranking.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_one_run_prints_both_sizes_with_ratio_speed_and_memory(capsys, tmp_path):
    bench = load_benchmark()
    md = tmp_path / "out.md"
    assert bench.main(["--sizes", "30x200", "12x400", "--dim", "8", "--repeats", "1", "--markdown", str(md)]) == 0
    out = capsys.readouterr().out
    header = next(line for line in out.splitlines() if line.startswith("| queries x gallery"))
    for column in ("rank / floor", "rank+top-50 / floor", "floor queries/s", "rank queries/s",
                   "rank+top-50 queries/s", "rank peak rise MB", "rank+top-50 peak rise MB"):
        assert column in header
    rows = [line for line in out.splitlines() if line.startswith("| 30 x 200") or line.startswith("| 12 x 400")]
    # two sizes x two target kinds (random, near)
    assert len(rows) == 4 and sum("random" in r for r in rows) == 2 and sum("near" in r for r in rows) == 2
    assert header in md.read_text()


def test_bad_size_is_an_error_naming_the_option():
    bench = load_benchmark()
    with pytest.raises(SystemExit):
        bench.main(["--sizes", "10by20"])
