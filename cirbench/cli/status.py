"""``cirbench status``: the grid of a results folder, cell by cell: done, running (claimed),
failed, diverged, pending."""

from __future__ import annotations

import argparse

from tabulate import tabulate

from cirbench.claims import STALE_AFTER_SECONDS
from cirbench.cli.options import (
    CliError,
    add_data_options,
    add_results_option,
    data_locations,
    int_at_least,
    positive_float,
    select_names,
    split_available,
)
from cirbench.plugins import Registry
from cirbench.protocol import DEFAULT_PROTOCOL


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("status", help="the grid of a results folder: done, running (claimed), failed, "
                              "diverged, pending")
    add_results_option(p)
    p.add_argument("--protocol", action="append", metavar="NAME",
                   help="protocol (repeatable; default: every registered protocol with results here)")
    p.add_argument("--composer", action="append", metavar="NAME", help="only this composer (repeatable)")
    p.add_argument("--dataset", action="append", metavar="NAME", help="only this dataset (repeatable)")
    p.add_argument("--seed", type=int_at_least(0), action="append", metavar="N",
                   help="seed (repeatable; default: the protocol's seeds)")
    p.add_argument("--ablations", action="store_true", help="count the ablation composers in the grid")
    p.add_argument("--claim-timeout", type=positive_float, default=STALE_AFTER_SECONDS / 60, metavar="M",
                   help="a claim not touched for M minutes is stale (default: %(default)g)")
    add_data_options(p)
    p.set_defaults(func=status)


def format_seconds(seconds: float) -> str:
    """``42 s``, ``3 min``, ``2.5 h``."""
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def status(reg: Registry, args: argparse.Namespace) -> int:
    """Print one row per cell and the counts of each state; exit status 0."""
    from cirbench.results import ResultsStore, RunKey
    from cirbench.runner import grid_status

    store = ResultsStore(args.results)
    if not store.root.is_dir():
        raise CliError(f"--results {args.results}: {'not a folder' if store.root.exists() else 'no such folder'}")
    if args.protocol:
        protocols = [reg.protocol(name) for name in dict.fromkeys(args.protocol)]
    else:  # the registered protocols that have a folder here, else the default one
        protocols = [p for p in reg.protocols.values() if (store.root / p.label).is_dir()] \
            or [reg.protocol(DEFAULT_PROTOCOL)]
    data = data_locations(args)
    datasets = select_names(reg, "dataset", args.dataset, True)
    datasets, _ = split_available(reg, datasets, data, explicit=bool(args.dataset))
    composers = select_names(reg, "composer", args.composer, True, ablations=args.ablations)
    keys = [RunKey(p, d, c, seed) for p in protocols for d in datasets for c in composers
            for seed in (args.seed or p.seeds)]
    cells = grid_status(store, keys, stale_after=60 * args.claim_timeout)
    rows = []
    for cell in cells:
        r, claim = cell.result, cell.claim
        if cell.state == "running":
            detail = f"{claim.host} pid {claim.pid}, for {format_seconds(claim.age_seconds())}"
        elif cell.state == "done":
            ks = [f"R@{k}" for k in cell.key.protocol.ks[:2]]
            detail = ", ".join(f"{k} = {100 * r.metrics.overall[k]:.1f}" for k in ks if k in r.metrics.overall)
        elif r is not None:
            detail = (r.error or "").splitlines()[0] if r.error else ""
        else:
            detail = ""
        if cell.stale:
            detail = (detail + "; " if detail else "") + \
                f"stale claim of {claim.host} pid {claim.pid} (gone; the next run takes it over)"
        rows.append([cell.key.protocol.label, cell.key.dataset, cell.key.composer, cell.key.seed,
                     cell.state, detail])
    print(tabulate(rows, headers=["protocol", "dataset", "composer", "seed", "state", "detail"],
                   maxcolwidths=[None, None, None, None, None, 70], disable_numparse=True))
    counts = {s: sum(c.state == s for c in cells) for s in ("done", "running", "failed", "diverged", "pending")}
    print(f"\n{len(cells)} cell(s): " + ", ".join(f"{n} {s}" for s, n in counts.items()))
    return 0
