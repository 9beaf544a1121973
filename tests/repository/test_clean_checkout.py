"""The README's main job leaves a clean checkout clean (issue 16).

The main job is tox's ``[testenv:main]``; this test runs its commands, exactly as tox.ini
writes them but on the ``smoke`` protocol and one composer (the full grid takes minutes), in
a fresh ``git clone`` of this checkout, and asserts that ``git status`` shows nothing: no
tracked file modified, no untracked file left.
"""

from __future__ import annotations

import configparser
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _main_job_commands() -> list[list[str]]:
    cfg = configparser.ConfigParser(interpolation=None)
    cfg.read(ROOT / "tox.ini", encoding="utf-8")
    lines = [ln.strip() for ln in cfg["testenv:main"]["commands"].splitlines() if ln.strip()]
    out = []
    for line in lines:
        line = line.replace("{posargs:results}", "results").replace("{/}", "/")
        line = line.replace("--protocol quick", "--protocol smoke").replace("--all", "--composer image-only")
        argv = shlex.split(line)
        assert argv[0] == "cirbench", line
        out.append([sys.executable, "-m", "cirbench.cli", *argv[1:]])
    return out


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
def test_main_job_leaves_a_clean_checkout(tmp_path):
    if not (ROOT / ".git").exists():
        pytest.skip(f"{ROOT} is not a git checkout")
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(clone)], check=True)
    env = {**os.environ, "CIRBENCH_CACHE": str(tmp_path / "cache"), "CIRBENCH_NO_PROGRESS": "1"}
    commands = _main_job_commands()
    assert len(commands) == 2, "the main job is a run and a leaderboard"
    for argv in commands:
        proc = subprocess.run(argv, cwd=clone, env=env, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, f"{argv} failed:\n{proc.stdout}\n{proc.stderr}"
    assert list((clone / "results").rglob("seed0.json")), "the job wrote no result"
    assert (clone / "results" / "leaderboard" / "README.md").is_file()
    status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"], cwd=clone,
                            capture_output=True, text=True, check=True).stdout
    assert status == "", f"the main job left the checkout dirty:\n{status}"
    # tox itself writes a `.venv` file and `.tox/` beside tox.ini: both must be ignored.
    for name in (".venv", ".tox/cirbench/bin/python"):
        ignored = subprocess.run(["git", "check-ignore", "--quiet", "--no-index", name], cwd=clone)
        assert ignored.returncode == 0, f"git does not ignore {name}, which tox writes"
