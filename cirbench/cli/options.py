"""What the commands share: the user-error type, argument types, the options several commands
take (results folder, cache folder, device and threads, data locations) and how they are
turned into objects, and the choice of datasets / composers a command works on.

Every error a user can cause is a :class:`CliError` (or an error of the registry or of the
data layer), printed by :func:`cirbench.cli.main` without a traceback, exit status 2.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from cirbench.data.locations import DataLocations
from cirbench.plugins import Registry


class CliError(Exception):
    """A user error: printed without a traceback, exit status 2."""


def default_cache_dir() -> Path:
    """``$CIRBENCH_CACHE``, else ``$XDG_CACHE_HOME/cirbench``, else ``~/.cache/cirbench``."""
    if os.environ.get("CIRBENCH_CACHE"):
        return Path(os.environ["CIRBENCH_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "cirbench"


# --- argument types -------------------------------------------------------------------------

def int_at_least(low: int):
    """An argparse ``type``: an integer >= ``low`` (anything else is refused by the parser,
    exit 2, before any work is done)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be >= {low}, got {value}")
        return value

    parse.__name__ = f"integer >= {low}"  # argparse names the type in its messages
    return parse


def positive_float(text: str) -> float:
    """An argparse ``type``: a finite number > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not (value > 0 and value != float("inf")):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return value


# --- options several commands take -----------------------------------------------------------

def add_results_option(p: argparse.ArgumentParser) -> None:
    """``--results DIR`` (default ``results``)."""
    p.add_argument("--results", default="results", metavar="DIR", help="results folder (default: results)")


def add_cache_dir_option(p: argparse.ArgumentParser) -> None:
    """``--cache-dir DIR`` of the commands that build datasets (default: :func:`default_cache_dir`)."""
    p.add_argument("--cache-dir", default=str(default_cache_dir()), metavar="DIR",
                   help="where datasets keep generated or decoded data (default: %(default)s)")


def add_data_options(p: argparse.ArgumentParser) -> None:
    """``--data-root DIR`` and ``--data NAME=PATH`` (read by :func:`data_locations`)."""
    p.add_argument("--data-root", default=None, metavar="DIR",
                   help="folder holding the local datasets, each in its own sub-folder (default: "
                   "$CIRBENCH_DATA, else ~/.local/share/cirbench)")
    p.add_argument("--data", action="append", default=None, metavar="NAME=PATH",
                   help="the folder of one dataset (repeatable; also $CIRBENCH_DATA_<NAME>)")


def add_device_options(p: argparse.ArgumentParser) -> None:
    """``--device`` and ``--threads N`` (read by :func:`device_and_threads`)."""
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:N (default: cuda when present)")
    p.add_argument("--threads", type=int_at_least(1), default=None, metavar="N", help="torch CPU threads")


def data_locations(args: argparse.Namespace) -> DataLocations:
    """``--data-root`` and ``--data NAME=PATH`` (see :mod:`cirbench.data.locations`), checked:
    CliError naming the option for an unknown dataset name or a folder that does not exist; a
    warning on stderr when the data root holds none of the datasets' folders."""
    try:
        data = DataLocations.from_options(getattr(args, "data_root", None), getattr(args, "data", None))
    except ValueError as exc:
        raise CliError(str(exc)) from exc
    reg_names = getattr(args, "_dataset_names", None)
    unknown = sorted(set(data.overrides) - set(reg_names)) if reg_names is not None else []
    if unknown:
        raise CliError(f"--data {unknown[0]}=...: unknown dataset {unknown[0]!r}; valid datasets: "
                       f"{', '.join(sorted(reg_names))}")
    for name, path in data.overrides.items():
        if not path.is_dir():
            raise CliError(f"--data {name}={path}: {'not a folder' if path.exists() else 'no such folder'}")
    if data.root is not None and not data.root.is_dir():
        raise CliError(f"--data-root {data.root}: {'not a folder' if data.root.exists() else 'no such folder'} "
                       "(it should hold one sub-folder per dataset, e.g. fashion200k/, cirr/)")
    folders = getattr(args, "_dataset_folders", None)
    if folders and data.data_root.is_dir() and not any((data.data_root / f).exists() for f in folders):
        origin = "--data-root" if data.root is not None else "the data root"
        print(f"cirbench: warning: {origin} {data.data_root} holds none of the dataset folders "
              f"cirbench looks for there: {', '.join(sorted(folders))}", file=sys.stderr)
    return data


def device_and_threads(args: argparse.Namespace):
    """The torch device of ``--device`` (default: CUDA when present) after applying
    ``--threads``; CliError for a device that does not exist here."""
    import torch

    from cirbench.provenance import resolve_device

    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        return resolve_device(args.device)
    except (ValueError, RuntimeError) as exc:
        raise CliError(str(exc)) from exc


# --- which datasets and composers ------------------------------------------------------------

def select_names(reg: Registry, kind: str, given: list[str] | None, all_: bool,
                 ablations: bool = True) -> list[str]:
    """The ``kind`` ("dataset" or "composer") names of ``--<kind> NAME`` (repeatable, duplicates
    dropped, order kept), or with ``--all`` and none given every registered one (ablation
    composers only when ``ablations``). UnknownNameError for a name not registered; CliError
    when neither is given."""
    table = getattr(reg, f"{kind}s")
    if all_ and not given:
        return sorted(n for n, item in table.items() if ablations or not getattr(item, "ablation_of", ""))
    if not given:
        raise CliError(f"give --{kind} NAME (valid: {', '.join(sorted(table))}) or --all")
    for name in given:
        getattr(reg, kind)(name)  # raises UnknownNameError listing the valid names
    return list(dict.fromkeys(given))


def split_available(reg: Registry, names: list[str], data: DataLocations,
                    explicit: bool) -> tuple[list[str], list[tuple[str, str]]]:
    """(available names, [(skipped name, reason)]). An explicitly named dataset that is not
    available is an error (its full message: what was expected where, where it is published)."""
    ok, skipped = [], []
    for name in names:
        spec = reg.dataset(name)
        avail = spec.availability(data)
        if avail.ok:
            ok.append(name)
        elif explicit:
            spec.layout.check(name, spec.root(data), data)  # raises DatasetNotAvailable
        else:
            skipped.append((name, avail.detail))
    return ok, skipped
