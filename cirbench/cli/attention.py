"""``cirbench attention``: draw a trained composer's attention maps over the reference images
of test queries (needs ``cirbench run ... --save-model``)."""

from __future__ import annotations

import argparse
from pathlib import Path

from cirbench.cli.options import (
    CliError,
    add_cache_dir_option,
    add_data_options,
    add_device_options,
    add_results_option,
    int_at_least,
)
from cirbench.cli.saved_model import load_saved, saved_run
from cirbench.plugins import Registry
from cirbench.protocol import DEFAULT_PROTOCOL


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("attention", help="draw a trained composer's attention maps over the reference "
                              "images of test queries (needs `cirbench run ... --save-model`)")
    p.add_argument("--composer", required=True, metavar="NAME", help="a composer with attention maps")
    p.add_argument("--dataset", required=True, metavar="NAME", help="the dataset it was run on")
    p.add_argument("--protocol", default=DEFAULT_PROTOCOL, metavar="NAME",
                   help=f"protocol of the run (default: {DEFAULT_PROTOCOL})")
    p.add_argument("--seed", type=int_at_least(0), default=None, metavar="N",
                   help="seed of the run (default: the protocol's first seed)")
    add_results_option(p)
    which = p.add_mutually_exclusive_group()
    which.add_argument("--queries", type=int_at_least(1), default=8, metavar="N",
                       help="the first N test queries (default: 8)")
    which.add_argument("--query-index", type=int_at_least(0), nargs="+", metavar="I",
                       help="these test queries (0-based indices into the dataset's test queries)")
    p.add_argument("--out", required=True, metavar="DIR", help="folder for the PNGs and index.md")
    add_cache_dir_option(p)
    add_device_options(p)
    add_data_options(p)
    p.set_defaults(func=attention)


def attention(reg: Registry, args: argparse.Namespace) -> int:
    """Write the overlays and ``index.md`` under ``--out``; exit status 0. CliError for a query
    index out of range, a composer without attention maps or a missing saved model."""
    from cirbench.attention import write_attention_report
    from cirbench.composer import supports_attention_maps

    runner, key, dataset = saved_run(reg, args)
    protocol, seed = key.protocol, key.seed
    n = len(dataset.queries())
    if args.query_index:
        bad = [i for i in args.query_index if not 0 <= i < n]
        if bad:
            raise CliError(f"--query-index {bad[0]}: out of range; dataset {args.dataset} has {n} "
                           f"test queries under protocol {protocol.label} (0..{n - 1})")
        indices = list(dict.fromkeys(args.query_index))
    else:
        indices = list(range(min(args.queries, n)))
    composer = runner.build_composer(key, dataset)  # seeded with the run's seed
    if not supports_attention_maps(composer):
        raise CliError(f"composer {args.composer!r} ({reg.provider('composer', args.composer)}) has no "
                       "attention maps: it does not implement Composer.attention_maps "
                       "(the optional method of cirbench/composer.py)")
    load_saved(runner, key, composer, args)
    records = write_attention_report(
        composer, dataset, indices, Path(args.out),
        heading=f"Attention maps: {args.composer} on {args.dataset} ({protocol.label}, seed {seed})",
    )
    files = sum(len(r.files) for r in records)
    print(f"{key}: {files} attention overlay(s) of {len(records)} quer{'y' if len(records) == 1 else 'ies'} "
          f"in {args.out}")
    print(f"wrote {Path(args.out) / 'index.md'}")
    return 0
