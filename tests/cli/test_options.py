"""Options are checked before any work is done (issue 16: the first hour of a new user)."""

from __future__ import annotations

import pytest

from cirbench.cli import main


def _run(capsys, *argv):
    try:
        code = main(list(argv))
    except SystemExit as exc:  # argparse refuses with exit 2
        code = exc.code
    out = capsys.readouterr()
    return code, out.out, out.err


def test_data_root_that_does_not_exist_is_an_error(capsys, tmp_path):
    missing = tmp_path / "no" / "such"
    code, out, err = _run(capsys, "run", "--all", "--data-root", str(missing), "--results", str(tmp_path / "r"),
                          "--protocol", "smoke")
    assert code == 2
    assert f"--data-root {missing}: no such folder" in err
    assert not (tmp_path / "r").exists()  # nothing ran


def test_data_root_that_is_a_file_is_an_error(capsys, tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    code, _, err = _run(capsys, "list", "--data-root", str(f))
    assert code == 2 and f"--data-root {f}: not a folder" in err


def test_empty_data_root_warns_with_what_was_looked_for(capsys, tmp_path):
    code, out, err = _run(capsys, "run", "--all", "--data-root", str(tmp_path), "--dry-run", "--protocol", "smoke")
    assert code == 0
    assert f"warning: --data-root {tmp_path} holds none of the dataset folders" in err
    for folder in ("fashion200k", "fashioniq", "cirr", "shoes", "mit-states", "css", "birds-to-words"):
        assert folder in err
    assert "skipped dataset fashioniq" in out


def test_data_root_with_one_dataset_folder_does_not_warn(capsys, tmp_path):
    (tmp_path / "shoes").mkdir()
    code, _, err = _run(capsys, "run", "--all", "--data-root", str(tmp_path), "--dry-run", "--protocol", "smoke")
    assert code == 0 and "warning" not in err


def test_dataset_folder_override_that_does_not_exist_is_an_error(capsys, tmp_path):
    code, _, err = _run(capsys, "run", "--all", "--data", f"fashioniq={tmp_path / 'nope'}", "--dry-run")
    assert code == 2 and f"--data fashioniq={tmp_path / 'nope'}: no such folder" in err


@pytest.mark.parametrize("option,value,message", [
    ("--checkpoint-every", "0", "must be >= 1, got 0"),
    ("--checkpoint-every", "ten", "expected an integer, got 'ten'"),
    ("--checkpoint-minutes", "-1", "must be a finite number > 0"),
    ("--checkpoint-minutes", "nan", "must be a finite number > 0"),
    ("--seed", "-1", "must be >= 0, got -1"),
    ("--threads", "0", "must be >= 1, got 0"),
])
def test_run_options_are_checked_by_the_parser(capsys, tmp_path, option, value, message):
    code, _, err = _run(capsys, "run", "--composer", "image-only", "--dataset", "css-synth", "--protocol", "smoke",
                        "--results", str(tmp_path / "r"), option, value)
    assert code == 2 and option in err and message in err
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("argv,message", [
    (["attention", "--composer", "sac", "--dataset", "css-synth", "--queries", "0"], "--queries"),
    (["attention", "--composer", "sac", "--dataset", "css-synth", "--query-index", "-3"], "--query-index"),
    (["attention", "--composer", "sac", "--dataset", "css-synth", "--seed", "-1"], "--seed"),
    (["check", "tirg", "--threads", "-2"], "--threads"),
    (["data", "verify", "shoes", "--workers", "0"], "--workers"),
])
def test_other_commands_check_their_numbers_too(capsys, argv, message):
    code, _, err = _run(capsys, *argv)
    assert code == 2 and message in err and "must be >=" in err


def test_files_and_folders_cirbench_writes_follow_the_umask(tmp_path):
    """Issue 16: results, leaderboard and caches were mode 0600 (temporary-file mode)."""
    import os
    import stat

    from cirbench.storage import atomic_write_folder, atomic_write_json

    old = os.umask(0o027)  # a group-shared cluster folder: group may read, others nothing
    try:
        atomic_write_json(tmp_path / "r" / "seed0.json", {"a": 1})

        def fill(folder):
            (folder / "x.bin").write_bytes(b"1")

        atomic_write_folder(tmp_path / "cache" / "k", fill)
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "r" / "seed0.json").stat().st_mode) == 0o640  # 0o666 & ~0o027
    assert stat.S_IMODE((tmp_path / "cache" / "k").stat().st_mode) == 0o750      # 0o777 & ~0o027
    assert stat.S_IMODE((tmp_path / "cache" / "k" / "x.bin").stat().st_mode) == 0o640


def test_data_verify_without_the_folder_gives_runs_helpful_message(capsys, tmp_path):
    from cirbench.plugins import load_registry

    layout = load_registry().dataset("fashioniq").layout
    code, out, err = _run(capsys, "data", "verify", "fashioniq", "--data-root", str(tmp_path))
    assert code == 1  # verify: 1 for a copy with problems
    assert f"dataset 'fashioniq' is not available at {tmp_path / 'fashioniq'}" in err
    assert "the folder does not exist" in err
    for req in layout.requirements:  # what was expected there ...
        assert req.pattern in err
    assert layout.url in err  # ... where it is published, and how to point elsewhere
    assert "--data fashioniq=PATH" in err and "$CIRBENCH_DATA_FASHIONIQ" in err
    # `run --dataset fashioniq` says exactly the same
    code_run, _, err_run = _run(capsys, "run", "--dataset", "fashioniq", "--composer", "tirg",
                                "--data-root", str(tmp_path), "--results", str(tmp_path / "r"))
    assert code_run == 2 and err_run == err


def test_data_verify_of_an_empty_folder_says_each_missing_file_once(capsys, tmp_path):
    from cirbench.plugins import load_registry

    layout = load_registry().dataset("fashioniq").layout
    (tmp_path / "fashioniq").mkdir()
    code, out, err = _run(capsys, "data", "verify", "fashioniq", "--data-root", str(tmp_path))
    assert code == 1
    for req in layout.requirements:
        assert err.count(f"matching {req.pattern} ") == 1, req.pattern
    # a header, one line per requirement (9 for FashionIQ), where it is published, how to point elsewhere
    assert len(err.strip().splitlines()) == 1 + len(layout.requirements) + 2


@pytest.mark.parametrize("command", ["export", "attention"])
@pytest.mark.parametrize("option,value,expected", [
    ("--seed", "-1", "argument --seed: must be >= 0, got -1"),
    ("--threads", "0", "argument --threads: must be >= 1, got 0"),
])
def test_seed_and_threads_are_checked_alike_by_the_commands_that_load_a_saved_run(
        capsys, tmp_path, command, option, value, expected):
    code, _, err = _run(capsys, command, "--composer", "tirg", "--dataset", "css-synth", "--results",
                        str(tmp_path), "--out", str(tmp_path / "out"), option, value)
    assert code == 2 and expected in err
    assert not (tmp_path / "out").exists()
