"""``cirbench check``: the conformance checks on composers or datasets (for plugin authors)."""

from __future__ import annotations

import argparse
import sys
import time

from tabulate import tabulate

from cirbench.cli.options import CliError, add_data_options, data_locations, int_at_least, split_available
from cirbench.plugins import Registry, UnknownNameError


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("check", help="run the conformance checks on composers or datasets (plugin authors)")
    p.add_argument("names", nargs="*", metavar="NAME", help="a composer or dataset (several allowed)")
    p.add_argument("--all", action="store_true", help="every registered composer and dataset")
    p.add_argument("--protocol", default=None, metavar="NAME",
                   help="protocol the checks build under (default: smoke with a 32-wide embedding "
                   "and batches of 4)")
    p.add_argument("--cache-dir", default=None, metavar="DIR",
                   help="where datasets keep generated or decoded data (default: a temporary folder)")
    p.add_argument("--threads", type=int_at_least(1), default=None, metavar="N",
                   help="torch CPU threads (1 is fastest for these tiny models on a busy machine)")
    add_data_options(p)
    p.set_defaults(func=check)


def check(reg: Registry, args: argparse.Namespace) -> int:
    """Run the checks of each named composer / dataset (or of all with ``--all``; datasets not
    available here are skipped then) and print a table; exit status 1 when one failed, else 0."""
    from cirbench.testing import CheckContext, run_checks

    kinds = ("composer", "dataset")
    valid = "; ".join(f"valid {k}s: {', '.join(sorted(getattr(reg, f'{k}s'))) or '(none)'}" for k in kinds)
    if args.all and args.names:
        raise CliError("give composer or dataset NAMEs or --all, not both")
    data = data_locations(args)
    if args.all:
        subjects = [(k, n) for k in kinds for n in sorted(getattr(reg, f"{k}s"))]
        available, unavailable = split_available(
            reg, [n for k, n in subjects if k == "dataset"], data, explicit=False)
        subjects = [(k, n) for k, n in subjects if k != "dataset" or n in available]
        for name, reason in unavailable:
            print(f"skipped dataset {name}: not found ({reason})")
    elif not args.names:
        raise CliError(f"give a composer or dataset NAME ({valid}) or --all")
    else:
        subjects = []
        for name in dict.fromkeys(args.names):
            found = [(k, name) for k in kinds if name in getattr(reg, f"{k}s")]
            if not found:
                raise UnknownNameError(f"unknown composer or dataset {name!r}; {valid}")
            subjects += found
        split_available(reg, [n for k, n in subjects if k == "dataset"], data, explicit=True)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    ctx = CheckContext(
        protocol=reg.protocol(args.protocol) if args.protocol else None,
        registry=reg,
        cache_dir=args.cache_dir,
        data=data,
    )
    print(f"conformance checks under protocol {ctx.protocol.label}: {len(subjects)} item(s)")
    results = []
    for kind, name in subjects:
        t0 = time.perf_counter()
        print(f"{kind} {name} ({reg.provider(kind, name)}) ...", end=" ", flush=True)
        mine = run_checks(kind, name, context=ctx)
        counts: dict[str, int] = {}
        for r in mine:
            counts[r.status] = counts.get(r.status, 0) + 1
        print(", ".join(f"{v} {k}" for k, v in counts.items()) + f" ({time.perf_counter() - t0:.1f} s)",
              flush=True)
        results += mine
    shown = {"failed": "FAILED", "xpassed": "XPASSED"}
    rows = [[r.kind, r.name, r.check, shown.get(r.status, r.status), r.message, f"{r.seconds:.1f}"]
            for r in results]
    print()
    print(tabulate(rows, headers=["kind", "name", "check", "result", "details", "s"],
                   maxcolwidths=[None, None, None, None, 70, None], disable_numparse=True))
    failed = [r for r in results if r.failed]
    total = {s: sum(r.status == s for r in results) for s in ("passed", "skipped", "xfailed")}
    print(f"\n{total['passed']} passed, {len(failed)} failed, {total['skipped']} skipped, "
          f"{total['xfailed']} failed as expected ({len(results)} checks)")
    for r in failed:
        print(f"FAILED {r.kind} {r.name} {r.check}: {r.message}", file=sys.stderr)
    return 1 if failed else 0
