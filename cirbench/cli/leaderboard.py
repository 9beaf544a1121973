"""``cirbench leaderboard``: the leaderboard (Markdown, CSV, plots, index.html) of a results
folder."""

from __future__ import annotations

import argparse
from pathlib import Path

from cirbench.cli.options import CliError, add_data_options, add_results_option, data_locations, default_cache_dir
from cirbench.plugins import Registry


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("leaderboard", help="write the leaderboard (Markdown, CSV, plots) from results")
    add_results_option(p)
    p.add_argument("--out", default="leaderboard", metavar="DIR", help="output folder (default: leaderboard)")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG bar charts files (index.html keeps its plots)")
    p.add_argument("--baselines", default=None, metavar="NAMES",
                   help="comma-separated composers the composition gain (R@1 minus the best of them) is "
                   "measured against (default: cirbench.leaderboard.DEFAULT_BASELINES, the baselines "
                   "plugin's image-only and text-only composers)")
    p.add_argument("--no-examples", action="store_true",
                   help="no retrieval examples in index.html (they build each dataset to show its images)")
    p.add_argument("--cache-dir", default=str(default_cache_dir()), metavar="DIR",
                   help="where datasets keep generated or decoded data, for the retrieval examples "
                   "(default: %(default)s)")
    add_data_options(p)
    p.set_defaults(func=leaderboard)


def leaderboard(reg: Registry, args: argparse.Namespace) -> int:
    """Write the leaderboard under ``--out``; exit status 0. CliError when ``--results`` is not a
    folder."""
    from cirbench.leaderboard import DEFAULT_BASELINES, write_leaderboard
    from cirbench.results import ResultsStore

    store = ResultsStore(args.results)
    if not store.root.exists():
        raise CliError(f"--results {args.results}: no such folder (run `cirbench run` first)")
    if not store.root.is_dir():
        raise CliError(f"--results {args.results}: not a folder")
    baselines = (DEFAULT_BASELINES if args.baselines is None
                 else tuple(b.strip() for b in args.baselines.split(",") if b.strip()))
    data = data_locations(args)

    def dataset_loader(protocol_name: str, protocol_hash: str, dataset_name: str):
        protocol = reg.protocol(protocol_name)
        if protocol.hash != protocol_hash:
            raise ValueError(f"protocol {protocol_name} is now {protocol.label}, the results are of "
                             f"{protocol_name}@{protocol_hash}")
        return reg.dataset(dataset_name).create(protocol, Path(args.cache_dir), data)

    written = write_leaderboard(store, Path(args.out), plots=not args.no_plots, baselines=baselines,
                                dataset_loader=None if args.no_examples else dataset_loader)
    for path in written:
        print(f"wrote {path}")
    for name in ("results.csv", "README.md", "index.html"):
        print(f"wrote {Path(args.out) / name}")
    return 0
