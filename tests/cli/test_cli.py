"""The command line: list, run, leaderboard, --help and the errors a user sees."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest

from cirbench.cli import main


def test_help_everywhere(capsys):
    for argv in (["--help"], ["list", "--help"], ["run", "--help"], ["leaderboard", "--help"], ["check", "--help"]):
        with pytest.raises(SystemExit) as exit_:
            main(argv)
        assert exit_.value.code == 0
        assert "usage: cirbench" in capsys.readouterr().out


def test_list_shows_every_kind_with_its_plugin(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for name in ("css-synth", "image-only", "text-only", "concat"):
        assert name in out
    from cirbench.protocol import BUILTIN_PROTOCOLS

    for p in BUILTIN_PROTOCOLS:  # each preset shown with its hash: smoke@d1fd9578a9, ...
        assert p.label in out
    assert "plugin 'baselines'" in out


@pytest.mark.parametrize(
    "argv,expected",
    [
        (["run", "--composer", "nope", "--dataset", "css-synth"], "unknown composer 'nope'; valid composers: "),
        (["run", "--composer", "concat", "--dataset", "nope"], "unknown dataset 'nope'; valid datasets: "),
        (["run", "--all", "--protocol", "nope"], "unknown protocol 'nope'; valid protocols: full, "),
        (["run", "--dataset", "css-synth"], "give --composer NAME"),
        (["leaderboard", "--results", "/nonexistent/dir"], "--results /nonexistent/dir: no such folder"),
    ],
)
def test_user_errors_are_clear(argv, expected, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert expected in err and "Traceback" not in err
    if "unknown composer" in expected:
        assert "concat" in err


def test_run_then_leaderboard(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    argv = ["run", "--composer", "image-only", "--dataset", "css-synth", "--protocol", "smoke",
            "--seed", "0", "--seed", "1", "--results", "res", "--cache-dir", str(tmp_path / "cache")]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "2 ran, 0 skipped, 0 failed" in out
    assert main(argv) == 0
    assert "0 ran, 2 skipped" in capsys.readouterr().out
    assert main(["leaderboard", "--results", "res", "--out", "lb", "--no-plots"]) == 0
    md = next((tmp_path / "lb").glob("smoke-*--css-synth.md")).read_text()
    # the main table: its one row is image-only's, over the two seeds run above
    lines = [ln for ln in md.splitlines() if ln.startswith("| ") and "|--" not in ln]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    rows = [dict(zip(header, (c.strip() for c in ln.strip("|").split("|")))) for ln in lines[1:]]
    board = [r for r in rows if "seeds" in r]
    assert [(r["composer"], r["seeds"]) for r in board] == [("image-only", "2")]
    results = [json.loads(p.read_text()) for p in (tmp_path / "res").rglob("*.json")]
    assert sorted(r["seed"] for r in results) == [0, 1]


def _planned(capsys, argv) -> dict[str, list[str]]:
    assert main(["run", "--dry-run", "--protocol", "smoke", *argv]) == 0
    out = capsys.readouterr().out
    return {line.split(":")[0]: line.split(": ", 1)[1].split(", ")
            for line in out.splitlines() if line.startswith(("datasets:", "composers:", "seeds:"))}


def test_all_leaves_out_ablations_unless_asked(capsys):
    plan = _planned(capsys, ["--all", "--dataset", "css-synth"])
    assert {"image-only", "text-only", "concat", "tirg", "tirg-lastconv", "composeae", "sac"} <= set(plan["composers"])
    assert not {"sac-concat", "sac-triplet-only", "composeae-lstm"} & set(plan["composers"])
    assert plan["datasets"] == ["css-synth"] and plan["seeds"] == ["0"]
    with_ablations = _planned(capsys, ["--all", "--ablations", "--dataset", "css-synth"])["composers"]
    assert {"sac-concat", "sac-l1-only", "composeae-lstm"} <= set(with_ablations)
    named = _planned(capsys, ["--composer", "sac-concat", "--dataset", "css-synth", "--seed", "3"])
    assert named["composers"] == ["sac-concat"] and named["seeds"] == ["3"]


# --- unwritable or bad results: clear errors, before any training ----------------------------

RUN = ["run", "--composer", "image-only", "--dataset", "css-synth", "--protocol", "smoke"]


def _unwritable_cases(tmp_path):
    (tmp_path / "a-file").write_text("x")
    yield "a-file", "a-file (File exists: a-file is a file)"  # the results path is a file
    (tmp_path / "blocked").mkdir()
    from cirbench.protocol import BUILTIN_PROTOCOLS

    smoke = next(p for p in BUILTIN_PROTOCOLS if p.name == "smoke")
    (tmp_path / "blocked" / smoke.label).write_text("x")
    # a file where the run's folder goes
    yield "blocked", f"blocked/{smoke.label}/css-synth/image-only (Not a directory: blocked/{smoke.label} is a file)"


def test_unwritable_results_stop_run_before_training(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for results, named in _unwritable_cases(tmp_path):
        assert main(RUN + ["--seed", "0", "--results", results, "--cache-dir", "cache"]) == 2
        err = capsys.readouterr().err
        assert f"cirbench: error: --results {results}: cannot write results in {named}; nothing was run" in err
        assert "Traceback" not in err
        assert not (tmp_path / "cache").exists()  # no dataset was generated, nothing trained
    assert (tmp_path / "a-file").read_text() == "x"


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0,
                    reason="root writes into read-only folders; test_unwritable_results_stop_run_before_training "
                    "covers the case with paths that fail for root too")
def test_read_only_results_folder_stops_run_before_training(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "ro").mkdir(mode=0o500)
    try:
        assert main(RUN + ["--seed", "0", "--results", "ro", "--cache-dir", "cache"]) == 2
    finally:
        (tmp_path / "ro").chmod(0o700)
    assert "Permission denied" in capsys.readouterr().err and not (tmp_path / "cache").exists()


def test_a_result_that_cannot_be_written_is_printed_and_kept(tmp_path, capsys, monkeypatch):
    import cirbench.results as results_mod

    monkeypatch.chdir(tmp_path)
    real = results_mod.atomic_write_json

    def disk_full(path, obj):
        if Path(path).is_relative_to("res") or Path(path).is_relative_to(tmp_path / "res"):
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        real(path, obj)

    monkeypatch.setattr(results_mod, "atomic_write_json", disk_full)
    argv = RUN + ["--seed", "0", "--results", "res", "--cache-dir", "cache"]
    assert main(argv) == 1
    out, err = capsys.readouterr()
    fallbacks = list((tmp_path / "cache" / "unsaved-results").rglob("seed0.json"))
    assert len(fallbacks) == 1
    fallback = fallbacks[0]
    saved = json.loads(fallback.read_text())
    r1 = f"{100 * saved['metrics']['overall']['R@1']:.1f}"
    assert f"ok: R@1 = {r1}" in out and "1 ran, 0 skipped, 0 failed" in out
    assert "NOT SAVED image-only on css-synth" in err and "No space left on device" in err
    assert f"saved in {Path('cache') / fallback.relative_to(tmp_path / 'cache')}" in err
    by_k = sorted(saved["metrics"]["overall"].items(), key=lambda kv: int(kv[0][2:]))
    assert "Its metrics: " + ", ".join(f"{k} = {100 * v:.1f}" for k, v in by_k) in err
    assert not (tmp_path / "res").exists() or not list((tmp_path / "res").rglob("*.json"))
    # copying the fallback file into the results folder, as the message says, keeps the run
    monkeypatch.setattr(results_mod, "atomic_write_json", real)
    dest = tmp_path / "res" / fallback.relative_to(tmp_path / "cache" / "unsaved-results")
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(fallback.read_text())
    assert main(argv) == 0
    assert "0 ran, 1 skipped" in capsys.readouterr().out


def test_malformed_result_files_are_skipped_by_run_and_leaderboard(tmp_path, capsys, caplog, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(RUN + ["--seed", "0", "--results", "res", "--cache-dir", "cache"]) == 0
    good = next((tmp_path / "res").rglob("seed0.json"))
    valid = json.loads(good.read_text())
    folder = good.parent.relative_to(tmp_path)  # as the user named it: --results res

    def variant(**changes):
        return json.dumps({**valid, **changes})

    no_overall = {"groups": valid["metrics"]["groups"]}
    bad = {  # seed -> (content, what the warning says)
        1: ("null", "expected a JSON object, got null"),
        2: ("42", "expected a JSON object, got integer 42"),
        3: ("[]", "expected a JSON object, got array"),
        4: ("{}", "missing field 'schema'"),
        5: (variant(seed=5, metrics=no_overall), "missing field 'metrics.overall'"),
        6: (variant(seed="a"), "field 'seed': expected an integer >= 0, got string \"a\""),
        7: (variant(seed=7, schema=99), "unknown schema version 99"),
        8: ("{trunc", "Expecting property name enclosed in double quotes"),
    }
    for seed, (content, _) in bad.items():
        (good.parent / f"seed{seed}.json").write_text(content)
    capsys.readouterr()
    caplog.clear()
    assert main(["leaderboard", "--results", "res", "--out", "lb", "--no-plots"]) == 0
    for seed, (_, reason) in bad.items():
        assert f"{folder / f'seed{seed}.json'}: {reason}" in caplog.text
    table = next((tmp_path / "lb").glob("smoke-*--css-synth.csv")).read_text().splitlines()
    header, row = table[0].split(","), table[1].split(",")
    assert len(table) == 2 and row[header.index("composer")] == "image-only"
    assert row[header.index("seeds")] == "1"  # the one good seed; the bad files left out
    # run: a malformed result is a cell not done: redone, with the warning naming the file
    caplog.clear()
    assert main(RUN + ["--seed", "0", "--seed", "7", "--results", "res", "--cache-dir", "cache"]) == 0
    assert "1 ran, 1 skipped" in capsys.readouterr().out
    assert f"{folder / 'seed7.json'}: unknown schema version 99" in caplog.text
    assert json.loads((good.parent / "seed7.json").read_text())["schema"] == 1
