"""The ``cirbench`` command: list, run, leaderboard, check.

The CLI owns the terminal: it prints tables and reports; the library only logs.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path

from tabulate import tabulate

from cirbench.plugins import PluginError, Registry, UnknownNameError, load_registry
from cirbench.protocol import DEFAULT_PROTOCOL


def default_cache_dir() -> Path:
    """``$CIRBENCH_CACHE``, else ``$XDG_CACHE_HOME/cirbench``, else ``~/.cache/cirbench``."""
    if os.environ.get("CIRBENCH_CACHE"):
        return Path(os.environ["CIRBENCH_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "cirbench"


class CliError(Exception):
    """A user error: printed without a traceback, exit status 2."""


def _cmd_list(reg: Registry, args: argparse.Namespace) -> int:
    def rows(kind: str, table: dict, describe) -> list[list[str]]:
        return [[name, describe(item), str(reg.provider(kind, name))] for name, item in sorted(table.items())]

    print("Datasets")
    print(tabulate(rows("dataset", reg.datasets, lambda d: d.description),
                   headers=["name", "description", "provided by"], tablefmt="simple"))
    print("\nComposers")
    print(tabulate(rows("composer", reg.composers, lambda c: c.description),
                   headers=["name", "description", "provided by"], tablefmt="simple"))
    print("\nProtocols")
    print(tabulate(
        [[p.label, p.description, str(reg.provider("protocol", n))] for n, p in sorted(reg.protocols.items())],
        headers=["name@hash", "description", "provided by"], tablefmt="simple"))
    return 0


def _names(reg: Registry, kind: str, given: list[str] | None, all_: bool) -> list[str]:
    table = getattr(reg, f"{kind}s")
    if all_ and not given:
        return sorted(table)
    if not given:
        raise CliError(f"give --{kind} NAME (valid: {', '.join(sorted(table))}) or --all")
    for name in given:
        getattr(reg, kind)(name)  # raises UnknownNameError listing the valid names
    return list(dict.fromkeys(given))


def _cmd_run(reg: Registry, args: argparse.Namespace) -> int:
    import torch

    from cirbench.provenance import resolve_device
    from cirbench.runner import Runner, RunOptions

    protocol = reg.protocol(args.protocol)
    datasets = _names(reg, "dataset", args.dataset, args.all)
    composers = _names(reg, "composer", args.composer, args.all)
    seeds = args.seed if args.seed else list(protocol.seeds)
    try:
        device = resolve_device(args.device)
    except (ValueError, RuntimeError) as exc:
        raise CliError(str(exc)) from exc
    if args.threads:
        torch.set_num_threads(args.threads)
    runner = Runner(reg, RunOptions(
        results=Path(args.results), cache_dir=Path(args.cache_dir), device=device, force=args.force,
        checkpoint_every=args.checkpoint_every,
    ))
    total = len(datasets) * len(composers) * len(seeds)
    print(f"protocol {protocol.label} · {len(datasets)} dataset(s) × {len(composers)} composer(s) "
          f"× {len(seeds)} seed(s) = {total} run(s) on {device}; results in {args.results}")
    rows: list[list] = []
    counter = {"n": 0}
    t0 = time.perf_counter()

    def on_event(kind, key, result):
        if kind == "start":
            counter["n"] += 1
            print(f"[{counter['n']}/{total}] {key} ...", flush=True)
            return
        if kind == "skip":
            counter["n"] += 1
            print(f"[{counter['n']}/{total}] {key}: result exists, skipped (--force redoes it)")
        r1 = ((result or {}).get("metrics") or {}).get("overall", {}).get(f"R@{protocol.ks[0]}")
        status = result["status"] if result else "?"
        if kind == "done":
            detail = f"R@{protocol.ks[0]} = {100 * r1:.1f}" if r1 is not None else (result.get("error") or "")
            print(f"    {status}: {detail} ({result.get('wall_seconds', 0):.0f} s)", flush=True)
        rows.append([key.dataset, key.composer, key.seed, status if kind == "done" else "skipped",
                     "" if r1 is None else f"{100 * r1:.1f}"])

    report = runner.run_grid(protocol, datasets, composers, seeds, on_event)
    print()
    print(tabulate(rows, headers=["dataset", "composer", "seed", "status", f"R@{protocol.ks[0]}"]))
    print(f"\n{len(report.ran)} ran, {len(report.skipped)} skipped, {len(report.failed)} failed, "
          f"{len(report.diverged)} diverged in {time.perf_counter() - t0:.0f} s")
    for key, err in report.failed:
        print(f"FAILED {key}: {err}", file=sys.stderr)
    return 1 if report.failed else 0


def _cmd_leaderboard(reg: Registry, args: argparse.Namespace) -> int:
    from cirbench.leaderboard import write_leaderboard
    from cirbench.results import ResultsStore

    store = ResultsStore(args.results)
    if not store.root.exists():
        raise CliError(f"--results {args.results}: no such folder (run `cirbench run` first)")
    written = write_leaderboard(store, Path(args.out), plots=not args.no_plots)
    for path in written:
        print(f"wrote {path}")
    print(f"wrote {Path(args.out) / 'README.md'}")
    return 0


def _cmd_check(reg: Registry, args: argparse.Namespace) -> int:
    from cirbench.testing import CheckContext, run_checks

    kinds = ("composer", "dataset")
    valid = "; ".join(f"valid {k}s: {', '.join(sorted(getattr(reg, f'{k}s'))) or '(none)'}" for k in kinds)
    if args.all and args.names:
        raise CliError("give composer or dataset NAMEs or --all, not both")
    if args.all:
        subjects = [(k, n) for k in kinds for n in sorted(getattr(reg, f"{k}s"))]
    elif not args.names:
        raise CliError(f"give a composer or dataset NAME ({valid}) or --all")
    else:
        subjects = []
        for name in dict.fromkeys(args.names):
            found = [(k, name) for k in kinds if name in getattr(reg, f"{k}s")]
            if not found:
                raise UnknownNameError(f"unknown composer or dataset {name!r}; {valid}")
            subjects += found
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    ctx = CheckContext(
        protocol=reg.protocol(args.protocol) if args.protocol else None,
        registry=reg,
        cache_dir=args.cache_dir,
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cirbench",
        description="Composed image retrieval benchmark: train and evaluate every composer on "
        "every dataset under one fixed protocol.",
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv: debug)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("list", help="datasets, composers and protocols, with the plugin providing each")
    p.set_defaults(func=_cmd_list)

    p = sub.add_parser("run", help="train and evaluate composers on datasets under a protocol")
    p.add_argument("--all", action="store_true",
                   help="every composer on every dataset (restricted by --composer/--dataset if given)")
    p.add_argument("--composer", action="append", metavar="NAME", help="a composer (repeatable)")
    p.add_argument("--dataset", action="append", metavar="NAME", help="a dataset (repeatable)")
    p.add_argument("--protocol", default=DEFAULT_PROTOCOL, metavar="NAME",
                   help=f"protocol preset (default: {DEFAULT_PROTOCOL})")
    p.add_argument("--seed", type=int, action="append", metavar="N",
                   help="seed (repeatable; default: the protocol's seeds)")
    p.add_argument("--results", default="results", metavar="DIR", help="results folder (default: results)")
    p.add_argument("--cache-dir", default=str(default_cache_dir()), metavar="DIR",
                   help="where datasets keep generated or decoded data (default: %(default)s)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:N (default: cuda when present)")
    p.add_argument("--threads", type=int, default=None, metavar="N", help="torch CPU threads")
    p.add_argument("--force", action="store_true", help="redo runs whose result exists")
    p.add_argument("--checkpoint-every", type=int, default=500, metavar="STEPS",
                   help="save a resumable checkpoint every so many steps (default: 500)")
    p.set_defaults(func=_cmd_run)

    p = sub.add_parser("leaderboard", help="write the leaderboard (Markdown, CSV, plots) from results")
    p.add_argument("--results", default="results", metavar="DIR", help="results folder (default: results)")
    p.add_argument("--out", default="leaderboard", metavar="DIR", help="output folder (default: leaderboard)")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG bar charts")
    p.set_defaults(func=_cmd_leaderboard)

    p = sub.add_parser("check", help="run the conformance checks on composers or datasets (plugin authors)")
    p.add_argument("names", nargs="*", metavar="NAME", help="a composer or dataset (several allowed)")
    p.add_argument("--all", action="store_true", help="every registered composer and dataset")
    p.add_argument("--protocol", default=None, metavar="NAME",
                   help="protocol the checks build under (default: smoke with a 32-wide embedding "
                   "and batches of 4)")
    p.add_argument("--cache-dir", default=None, metavar="DIR",
                   help="where datasets keep generated or decoded data (default: a temporary folder)")
    p.add_argument("--threads", type=int, default=None, metavar="N",
                   help="torch CPU threads (1 is fastest for these tiny models on a busy machine)")
    p.set_defaults(func=_cmd_check)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = [logging.WARNING, logging.INFO, logging.DEBUG][min(args.verbose, 2)]
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    try:
        reg = load_registry()
        return args.func(reg, args)
    except (PluginError, UnknownNameError, CliError) as exc:
        print(f"cirbench: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
