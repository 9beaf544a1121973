"""``cirbench run --launcher slurm|local``: cells as submitit jobs, resources from options or
a TOML file."""

from __future__ import annotations

import shutil

import pytest

from cirbench.cli import build_parser, main
from cirbench.launch import LauncherError, Resources, read_resources, resources_from_args
from cirbench.results import ResultsStore


def test_resources_come_from_the_file_under_the_options(tmp_path):
    cfg = tmp_path / "slurm.toml"
    cfg.write_text('[slurm]\npartition = "gpu"\ntime = 90\ngpus = 2\n')
    args = build_parser().parse_args(["run", "--all", "--launcher", "slurm", "--launcher-config", str(cfg),
                                      "--slurm-time", "30", "--slurm-mem", "64"])
    res = resources_from_args(args)
    assert res == Resources(partition="gpu", time=30, gpus=2, cpus=8, mem=64, array_parallelism=64)
    # submitit's AutoExecutor parameters, written out by hand from the fields above
    assert res.executor_parameters("slurm") == {
        "name": "cirbench", "timeout_min": 30, "cpus_per_task": 8, "tasks_per_node": 1, "nodes": 1,
        "gpus_per_node": 2, "mem_gb": 64, "slurm_array_parallelism": 64, "slurm_partition": "gpu"}
    assert res.executor_parameters("local") == {
        "name": "cirbench", "timeout_min": 30, "cpus_per_task": 8, "tasks_per_node": 1, "nodes": 1,
        "gpus_per_node": 2}


@pytest.mark.parametrize("text, message", [
    ("qos = 'high'\n", "unknown key 'qos'"),
    ("time = '2h'\n", "key 'time' must be an integer >= 0, got '2h'"),
    ("time = \n", "cannot be read as TOML"),
])
def test_a_bad_config_file_is_named_with_its_key(tmp_path, text, message):
    cfg = tmp_path / "slurm.toml"
    cfg.write_text(text)
    with pytest.raises(LauncherError, match="slurm.toml") as err:
        read_resources(cfg, {})
    assert message in str(err.value)
    with pytest.raises(LauncherError, match="no such file"):
        read_resources(tmp_path / "missing.toml", {})


def test_slurm_without_slurm_is_a_clear_error_and_runs_nothing(tmp_path, capsys, monkeypatch):
    if shutil.which("srun"):
        pytest.skip("this machine has Slurm")
    monkeypatch.setenv("CIRBENCH_CACHE", str(tmp_path / "cache"))
    rc = main(["run", "--protocol", "smoke", "--dataset", "css-synth", "--composer", "image-only",
               "--results", str(tmp_path / "r"), "--launcher", "slurm"])
    assert rc == 2
    assert "--launcher slurm: Could not detect \"srun\"" in capsys.readouterr().err
    assert list(ResultsStore(tmp_path / "r")) == []


def test_the_local_launcher_runs_each_cell_as_a_job_and_reports_like_a_local_run(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("CIRBENCH_CACHE", str(tmp_path / "cache"))
    argv = ["run", "--all", "--protocol", "smoke", "--dataset", "css-synth", "--composer", "image-only",
            "--composer", "text-only", "--threads", "1", "--results", str(tmp_path / "r"),
            "--launcher", "local", "--launcher-folder", str(tmp_path / "jobs")]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "submitted 2 local job(s)" in out
    assert "2 ran, 0 skipped, 0 failed, 0 diverged" in out
    results = sorted((r.composer.name, r.status) for r in ResultsStore(tmp_path / "r"))
    assert results == [("image-only", "ok"), ("text-only", "ok")]
    logs = sorted(p.name for p in (tmp_path / "jobs").glob("*_log.out"))
    assert len(logs) == 2  # one job per cell

    assert main(argv) == 0  # everything done: no job is submitted
    out = capsys.readouterr().out
    assert "submitted" not in out and "0 ran, 2 skipped" in out
    assert len(list((tmp_path / "jobs").glob("*_log.out"))) == 2
