"""``cirbench data``: ``verify NAME`` checks a local copy of a dataset; ``cache list`` and
``cache clear`` show and remove the caches (decoded images, generated datasets, text
embeddings)."""

from __future__ import annotations

import argparse
import sys

from tabulate import tabulate

from cirbench.cli.options import CliError, add_data_options, data_locations, default_cache_dir, int_at_least
from cirbench.data.errors import DatasetNotAvailable
from cirbench.plugins import Registry


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("data", help="local datasets: verify a copy; list or clear the caches")
    data_sub = p.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    q = data_sub.add_parser("verify", help="check a local dataset: required files, links, every image "
                            "decodable, the checks every run makes (triplets, queries, targets in their "
                            "galleries), counts against the published ones; exit 1 on problems")
    q.add_argument("name", metavar="NAME", help="a dataset read from a local folder")
    q.add_argument("--workers", type=int_at_least(1), default=4, metavar="N", help="decoding threads (default: 4)")
    add_data_options(q)
    q.set_defaults(func=verify)
    q = data_sub.add_parser("cache", help="the caches: decoded images, generated datasets, text embeddings")
    cache_sub = q.add_subparsers(dest="cache_command", required=True, metavar="ACTION")
    from cirbench.data.cache import KINDS

    for action, func, hlp in (("list", cache_list, "list the caches and what each was built from"),
                              ("clear", cache_clear, "remove caches (all, or NAME's, or of --kind)")):
        c = cache_sub.add_parser(action, help=hlp)
        if action == "clear":
            c.add_argument("name", nargs="?", default=None, metavar="NAME", help="only this dataset's caches")
        c.add_argument("--kind", choices=sorted(KINDS), default=None,
                       help="only caches of this kind (default: every kind)")
        c.add_argument("--cache-dir", default=str(default_cache_dir()), metavar="DIR",
                       help="the cache directory (default: %(default)s)")
        c.set_defaults(func=func)


def verify(reg: Registry, args: argparse.Namespace) -> int:
    """``data verify NAME``: print the report; exit status 1 when the copy is missing or has
    problems, else 0. CliError for an embedded (generated) dataset."""
    from cirbench.data.verify import verify_dataset

    spec = reg.dataset(args.name)
    if spec.layout is None:
        raise CliError(f"dataset {args.name!r} is embedded (generated, not read from a folder): "
                       "nothing to verify")
    data = data_locations(args)
    try:
        spec.layout.check(args.name, spec.root(data), data)
    except DatasetNotAvailable as exc:  # the same message as `run`; exit 1 like any bad copy
        print(f"cirbench: error: {exc}", file=sys.stderr)
        return 1
    report = verify_dataset(spec, data, workers=args.workers)
    print(f"dataset {report.name} at {report.root}")
    print(f"images referenced by the annotations: {report.images_listed}, decodable: {report.images_ok}")
    if report.counts:
        print(tabulate([[c.what, "?" if c.found is None else c.found,
                         "-" if c.expected is None else c.expected, c.source,
                         "ok" if c.ok and c.found is not None else ("-" if c.found is None else "DIFFERS")]
                        for c in report.counts],
                       headers=["count", "found", "published", "source", ""], tablefmt="simple"))
    for w in report.warnings:
        print(f"warning: {w}")
    if report.ok:
        print("OK: no problems")
        return 0
    print(f"\n{len(report.problems)} problem(s):")
    for p in report.problems:
        print(f"  {p}")
    if report.url:
        print(f"the dataset is published at {report.url}")
    return 1


def cache_list(reg: Registry, args: argparse.Namespace) -> int:
    """``data cache list``: one row per cache under ``--cache-dir``; exit status 0."""
    from cirbench.data.cache import cache_entries

    entries = cache_entries(args.cache_dir, args.kind)
    if not entries:
        print(f"no caches under {args.cache_dir}" + (f" of kind {args.kind}" if args.kind else ""))
        return 0
    print(tabulate([[e.kind, e.name, e.label, e.built_from, "?" if e.entries is None else e.entries,
                     f"{e.megabytes:.1f}", e.created, e.status, str(e.folder)]
                    for e in entries],
                   headers=["kind", "name", "label", "built from", "entries", "MiB", "created", "status",
                            "folder"],
                   tablefmt="simple"))
    print(f"\n{len(entries)} cache(s), {sum(e.megabytes for e in entries):.1f} MiB")
    return 0


def cache_clear(reg: Registry, args: argparse.Namespace) -> int:
    """``data cache clear [NAME] [--kind K]``: remove the caches, printing each; exit status 0.
    UnknownNameError for a NAME that is neither a dataset nor the name of a cache."""
    from cirbench.data.cache import cache_entries, clear_cache

    if args.name is not None and args.name not in reg.datasets \
            and all(e.name != args.name for e in cache_entries(args.cache_dir)):
        reg.dataset(args.name)  # raises UnknownNameError listing the valid names
    removed = clear_cache(args.cache_dir, args.name, args.kind)
    for e in removed:
        print(f"removed {e.kind} cache {e.folder} ({e.megabytes:.1f} MiB)")
    what = " ".join(x for x in (args.kind, "cache(s)", f"of {args.name}" if args.name else "") if x)
    print(f"{len(removed)} {what} removed from {args.cache_dir}")
    return 0
