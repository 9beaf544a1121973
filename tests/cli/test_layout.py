"""The layout of ``cirbench/cli/``: one module per command, its options beside it, one
dispatcher; and the three ways in (console script, ``python -m cirbench``, ``python -m
cirbench.cli``) reach the same ``main``."""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import cirbench.cli
from cirbench.cli import COMMANDS, build_parser, main

#: modules of the package that are not commands: what several commands share
SHARED = {"options", "saved_model", "__main__"}


def _sub_choices(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(actions[0].choices) if actions else {}


def _leaf_funcs(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> dict[tuple[str, ...], object]:
    """{(command, action, ...): func} of every parser that runs something."""
    subs = _sub_choices(parser)
    if not subs:
        return {path: parser.get_default("func")}
    out = {}
    for name, sub in subs.items():
        out.update(_leaf_funcs(sub, path + (name,)))
    return out


def test_every_command_module_is_registered_and_parses_only_its_own_command():
    in_package = {m.name for m in pkgutil.iter_modules(cirbench.cli.__path__)} - SHARED
    assert in_package == {c.__name__.rsplit(".", 1)[1] for c in COMMANDS}
    names = []
    for command in COMMANDS:
        parser = argparse.ArgumentParser()
        command.add_parser(parser.add_subparsers())
        added = list(_sub_choices(parser))
        assert len(added) == 1, f"{command.__name__} adds {added}, not one command"
        names += added
        for path, func in _leaf_funcs(parser).items():
            # the function a command runs is defined beside its options
            assert callable(func) and func.__module__ == command.__name__, (path, func)
    # the dispatcher lists exactly these, in this order (the order of `cirbench --help`)
    assert list(_sub_choices(build_parser())) == names == [
        "list", "run", "status", "attention", "export", "leaderboard", "check", "data"]
    assert sorted(_leaf_funcs(build_parser())) == sorted(
        [(n,) for n in names if n != "data"] + [("data", "verify"), ("data", "cache", "list"),
                                                ("data", "cache", "clear")])


def test_the_console_script_and_both_module_entries_reach_main(monkeypatch, capsys):
    root = Path(__file__).resolve().parents[2]
    script = tomllib.loads((root / "pyproject.toml").read_text())["project"]["scripts"]["cirbench"]
    module, _, attr = script.partition(":")
    assert getattr(importlib.import_module(module), attr) is main
    assert (root / "cirbench" / "__main__.py").read_text().count("from cirbench.cli import main") == 1

    monkeypatch.setenv("COLUMNS", "100")  # argparse wraps help to the terminal's width
    with pytest.raises(SystemExit) as exit_:
        main(["data", "cache", "--help"])
    assert exit_.value.code == 0
    in_process = capsys.readouterr().out
    assert in_process.startswith("usage: cirbench data cache [-h] ACTION ...")
    env = {**os.environ, "COLUMNS": "100", "PYTHONPATH": os.pathsep.join(sys.path)}
    out = subprocess.run([sys.executable, "-m", "cirbench.cli", "data", "cache", "--help"],
                         capture_output=True, text=True, env=env, timeout=300)
    assert (out.returncode, out.stdout) == (0, in_process), out.stderr
