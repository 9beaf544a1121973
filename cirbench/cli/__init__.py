"""The ``cirbench`` command: list, run, status, attention, export, leaderboard, check, data.

The CLI owns the terminal: it prints tables and reports; the library only logs.

One module per command, each with its own options beside it: ``add_parser(subparsers)`` adds
the command's parser and sets its ``func(reg, args) -> exit status``. What several commands
share (argument types, common options, :class:`~cirbench.cli.options.CliError`, data
locations, device and threads) is in :mod:`cirbench.cli.options`; the saved model of a run
(attention, export) in :mod:`cirbench.cli.saved_model`. This module builds the parser from
:data:`COMMANDS` and dispatches.
"""

from __future__ import annotations

import argparse
import logging
import sys

from cirbench.cli import attention, check, data, export, leaderboard, list_, run, status
from cirbench.cli.options import CliError
from cirbench.data.errors import DatasetNotAvailable, DatasetValidationError, UnsafePathError
from cirbench.plugins import PluginError, UnknownNameError, load_registry

__all__ = ["COMMANDS", "build_parser", "main"]

#: the command modules, in the order ``cirbench --help`` lists them
COMMANDS = (list_, run, status, attention, export, leaderboard, check, data)


def build_parser() -> argparse.ArgumentParser:
    """The parser of every command (``args.func(reg, args)`` runs the one chosen)."""
    parser = argparse.ArgumentParser(
        prog="cirbench",
        description="Composed image retrieval benchmark: train and evaluate every composer on "
        "every dataset under one fixed protocol.",
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv: debug)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` (default: ``sys.argv[1:]``), load the plugins and run the command; its
    exit status, or 2 after printing ``cirbench: error: ...`` (no traceback) for a user error.
    A bad option exits 2 from argparse before anything is loaded."""
    parser = build_parser()
    args = parser.parse_args(argv)
    level = [logging.WARNING, logging.INFO, logging.DEBUG][min(args.verbose, 2)]
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    try:
        reg = load_registry()
        args._dataset_names = sorted(reg.datasets)
        args._dataset_folders = sorted({d.layout.folder or n for n, d in reg.datasets.items() if d.layout})
        return args.func(reg, args)
    except (PluginError, UnknownNameError, CliError, DatasetNotAvailable, DatasetValidationError,
            UnsafePathError) as exc:
        print(f"cirbench: error: {exc}", file=sys.stderr)
        return 2
