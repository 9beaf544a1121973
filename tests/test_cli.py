"""The command line: list, run, leaderboard, --help and the errors a user sees."""

from __future__ import annotations

import json

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
    for name in ("css-synth", "image-only", "text-only", "concat", "smoke@", "quick@", "full@"):
        assert name in out
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
    assert "image-only" in md and " 2 " in md  # two seeds
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
