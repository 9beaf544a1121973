"""Several runners on one results folder: atomic claims, stale claims taken over, no cell run
twice, ``cirbench status``."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from cirbench import ComposerSpec, hookimpl
from cirbench.claims import Claim, Heartbeat, read_claim, release, try_claim
from cirbench.cli import main
from cirbench.plugins import load_registry
from cirbench.results import ResultsStore, RunKey
from cirbench.runner import Runner, RunOptions, grid_status

REPO = Path(__file__).resolve().parents[1]


def dead_pid() -> int:
    """The pid of a process that has exited and been reaped."""
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def write_claim(path: Path, host: str, pid: int, age: float = 0.0, token: str = "t") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"host": host, "pid": pid, "started": "2026-01-01T00:00:00+00:00",
                                "token": token}))
    then = time.time() - age
    os.utime(path, (then, then))


def test_a_claim_is_held_until_released_and_only_its_owner_releases_it(tmp_path):
    path = tmp_path / "seed0.claim"
    mine = try_claim(path)
    assert mine is not None and mine.pid == os.getpid() and mine.host == socket.gethostname()
    assert try_claim(path) is None  # held by a live process (this one)
    release(path, Claim(mine.host, mine.pid, mine.started, "someone-else"))
    assert path.exists()  # not ours to remove
    release(path, mine)
    assert not path.exists()
    assert try_claim(path) is not None


def test_a_claim_of_a_dead_process_on_this_host_is_taken_over(tmp_path, caplog):
    path = tmp_path / "seed0.claim"
    write_claim(path, socket.gethostname(), dead_pid())
    mine = try_claim(path)
    assert mine is not None and read_claim(path).token == mine.token
    assert "taking over the stale claim" in caplog.text


def test_a_claim_of_another_host_is_stale_only_after_the_timeout(tmp_path):
    path = tmp_path / "seed0.claim"
    write_claim(path, "elsewhere.example", 1, age=100)
    assert try_claim(path, stale_after=600) is None  # touched 100 s ago: alive
    assert read_claim(path).host == "elsewhere.example"
    write_claim(path, "elsewhere.example", 1, age=700)
    assert try_claim(path, stale_after=600) is not None  # silent for 700 s > 600 s


def test_an_unreadable_claim_counts_as_alive_until_the_timeout(tmp_path):
    path = tmp_path / "seed0.claim"
    path.write_text("")  # a runner died between creating and filling it
    assert read_claim(path).host == "?"
    assert try_claim(path, stale_after=600) is None
    then = time.time() - 601
    os.utime(path, (then, then))
    assert try_claim(path, stale_after=600) is not None


@pytest.mark.parametrize("stale", [False, True])
def test_of_many_concurrent_claimers_exactly_one_wins(tmp_path, stale):
    path = tmp_path / "seed0.claim"
    if stale:  # all of them see the same stale claim and take it over at once
        write_claim(path, socket.gethostname(), dead_pid())
    start = threading.Barrier(8)
    won: list = []

    def claimer():
        start.wait()
        c = try_claim(path)
        if c is not None:
            won.append(c)

    threads = [threading.Thread(target=claimer) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(won) == 1
    assert read_claim(path).token == won[0].token


def test_the_heartbeat_touches_the_claim(tmp_path):
    path = tmp_path / "seed0.claim"
    mine = try_claim(path)
    old = time.time() - 1000
    os.utime(path, (old, old))
    with Heartbeat(path, seconds=0.05):
        time.sleep(0.3)
    assert read_claim(path).touched > old + 900
    assert not read_claim(path).stale(stale_after=600)
    release(path, mine)


@pytest.fixture
def runner(pixel_mean_cls, tmp_path, css_tiny, smoke):
    class TestPlugin:
        @hookimpl
        def cirbench_composers(self):
            return [ComposerSpec("pixel-mean", pixel_mean_cls)]

    reg = load_registry(extra_plugins=[("test-plugin", TestPlugin())])
    r = Runner(reg, RunOptions(results=tmp_path / "results", cache_dir=tmp_path / "cache",
                               device=torch.device("cpu")))
    r._datasets[(smoke.hash, "css-synth")] = css_tiny
    return r


def test_the_grid_leaves_a_claimed_cell_to_its_runner_and_takes_over_a_dead_ones(runner, smoke):
    live = RunKey(smoke, "css-synth", "pixel-mean", 0)
    dead = RunKey(smoke, "css-synth", "pixel-mean", 1)
    write_claim(runner.store.claim_path(live), "elsewhere.example", 4242)  # alive: just touched
    write_claim(runner.store.claim_path(dead), socket.gethostname(), dead_pid())
    events = []
    report = runner.run_grid(smoke, ["css-synth"], ["pixel-mean"], [0, 1],
                             lambda kind, key, result: events.append((kind, key.seed)))
    assert report.busy == [live] and report.ran == [dead]
    assert events == [("busy", 0), ("start", 1), ("done", 1)]
    assert runner.store.read(live) is None and runner.store.read(dead).status == "ok"
    assert not runner.store.claim_path(dead).exists()  # released after the result was written
    assert read_claim(runner.store.claim_path(live)).host == "elsewhere.example"  # untouched

    cells = {c.key.seed: c for c in grid_status(runner.store, [live, dead])}
    assert cells[0].state == "running" and cells[0].claim.host == "elsewhere.example"
    assert cells[1].state == "done"


def test_a_cell_another_runner_finished_during_this_grid_is_not_run_again(runner, smoke, monkeypatch):
    """Runner B planned the cell (no result yet); runner A finished it (even as failed, which
    a later grid retries) before B claimed it: B skips it."""
    monkeypatch.setattr(runner, "_finished", lambda k: None)  # the plan was made before A wrote
    real_claim = runner._claim

    def claim_after_a_wrote(k):
        other = Runner(runner.registry, runner.options)
        other._datasets = runner._datasets
        other.run_one(k)  # runner A, between B's plan and B's claim
        return real_claim(k)

    monkeypatch.setattr(runner, "_claim", claim_after_a_wrote)
    events = []
    report = runner.run_grid(smoke, ["css-synth"], ["pixel-mean"], [0],
                             lambda kind, k, result: events.append(kind))
    assert events == ["skip"] and report.ran == []


def test_status_shows_every_state(runner, smoke, capsys, monkeypatch, tmp_path):
    store = runner.store
    runner.run_grid(smoke, ["css-synth"], ["pixel-mean"], [0])  # done
    k_failed, k_div, k_run, k_pend = (RunKey(smoke, "css-synth", "pixel-mean", s) for s in (1, 2, 3, 4))
    ok = store.read(RunKey(smoke, "css-synth", "pixel-mean", 0))
    from dataclasses import replace

    store.write(k_failed, replace(ok, seed=1, status="failed", error="RuntimeError: boom", metrics=None))
    store.write(k_div, replace(ok, seed=2, status="diverged", error="non-finite loss at step 3"))
    write_claim(store.claim_path(k_run), "node7", 99, age=5)
    write_claim(store.claim_path(k_pend), socket.gethostname(), dead_pid())  # stale: pending
    cells = {c.key.seed: c for c in grid_status(store, [k_failed, k_div, k_run, k_pend,
                                                        RunKey(smoke, "css-synth", "pixel-mean", 0)])}
    assert {s: c.state for s, c in cells.items()} == {
        0: "done", 1: "failed", 2: "diverged", 3: "running", 4: "pending"}
    assert cells[4].stale and not cells[3].stale

    # the command: the registry's grid (css-synth, fashion-synth x the built-in composers) plus
    # the test composer's cells found in the folder
    monkeypatch.setenv("CIRBENCH_CACHE", str(tmp_path / "cache"))
    assert main(["status", "--results", str(store.root), "--dataset", "css-synth",
                 "--composer", "image-only"]) == 0
    out = capsys.readouterr().out
    lines = {tuple(line.split()[2:5]): line for line in out.splitlines() if "css-synth" in line}
    assert "pending" in lines[("image-only", "0", "pending")]
    assert "R@1 = " in lines[("pixel-mean", "0", "done")]
    assert "RuntimeError: boom" in lines[("pixel-mean", "1", "failed")]
    assert "node7 pid 99" in lines[("pixel-mean", "3", "running")]
    assert "stale claim" in lines[("pixel-mean", "4", "pending")]
    assert "6 cell(s): 1 done, 1 running, 1 failed, 1 diverged, 2 pending" in out


def test_two_runners_on_one_folder_run_every_cell_exactly_once(tmp_path):
    """Two ``cirbench run --all`` processes at once on one results folder (shared cache):
    every cell of the grid is run by exactly one of them."""
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{REPO / 'plugins'}",
           "CIRBENCH_CACHE": str(tmp_path / "cache"), "XDG_CACHE_HOME": str(tmp_path / "xdg")}
    cmd = [sys.executable, "-m", "cirbench", "run", "--all", "--protocol", "smoke",
           "--dataset", "css-synth", "--composer", "image-only", "--composer", "text-only",
           "--seed", "0", "--seed", "1", "--threads", "1", "--results", str(tmp_path / "results")]
    procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    started = [m for out in outs for m in re.findall(r"^\[\d+/4\] (.*) \.\.\.$", out, re.M)]
    assert sorted(started) == sorted(set(started)) and len(started) == 4, outs
    store = ResultsStore(tmp_path / "results")
    assert sorted((r.composer.name, r.seed, r.status) for r in store) == [
        ("image-only", 0, "ok"), ("image-only", 1, "ok"), ("text-only", 0, "ok"), ("text-only", 1, "ok")]
    assert not list((tmp_path / "results").rglob("*.claim"))
