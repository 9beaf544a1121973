"""``cirbench export``: a trained composer's predictions on a hidden test split, in the format
its evaluation server or starter kit reads (needs ``cirbench run ... --save-model``)."""

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
    p = subparsers.add_parser("export", help="write a trained composer's predictions on a hidden test split in "
                              "the format its evaluation server or starter kit reads (needs `cirbench run ... "
                              "--save-model`)")
    p.add_argument("--composer", required=True, metavar="NAME")
    p.add_argument("--dataset", required=True, metavar="NAME", help="the dataset it was run on (cirr, fashioniq, ...)")
    p.add_argument("--protocol", default=DEFAULT_PROTOCOL, metavar="NAME",
                   help=f"protocol of the run (default: {DEFAULT_PROTOCOL})")
    p.add_argument("--seed", type=int_at_least(0), default=None, metavar="N",
                   help="seed of the run (default: the protocol's first seed)")
    add_results_option(p)
    p.add_argument("--out", required=True, metavar="DIR", help="folder for the prediction files")
    add_cache_dir_option(p)
    add_device_options(p)
    add_data_options(p)
    p.set_defaults(func=export)


def export(reg: Registry, args: argparse.Namespace) -> int:
    """Rank the hidden split with the run's saved model and write the checked files under
    ``--out``; exit status 0. CliError when the dataset has no hidden split, its files cannot
    be read, the saved model is missing or the export fails the format's checks (nothing
    written then)."""
    from cirbench.data.errors import AnnotationError
    from cirbench.export import ExportFormatError, export_predictions, has_hidden_split

    runner, key, dataset = saved_run(reg, args)
    protocol = key.protocol
    if not has_hidden_split(dataset):
        raise CliError(f"dataset {args.dataset!r} has no hidden test split to export (its loader "
                       "defines no hidden_split; see cirbench/export.py)")
    try:
        split = dataset.hidden_split(Path(args.cache_dir))
    except AnnotationError as exc:
        raise CliError(str(exc)) from exc
    composer = runner.build_composer(key, dataset)  # seeded with the run's seed
    load_saved(runner, key, composer, args)
    try:
        files = export_predictions(composer, split, Path(args.out), batch_size=protocol.eval_batch_size,
                                   chunk=protocol.eval_chunk)
    except ExportFormatError as exc:
        raise CliError(f"the export does not pass the format's checks, nothing written: {exc}") from exc
    print(f"{key}: {len(split.queries)} queries of {args.dataset} {split.name} ranked")
    for f in files:
        print(f"wrote {f}")
    return 0
