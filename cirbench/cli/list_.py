"""``cirbench list``: datasets (and whether each is available here), composers and protocols,
with the plugin providing each."""

from __future__ import annotations

import argparse

from tabulate import tabulate

from cirbench.cli.options import add_data_options, data_locations
from cirbench.plugins import Registry


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("list", help="datasets (and whether each is available here), composers and "
                              "protocols, with the plugin providing each")
    add_data_options(p)
    p.set_defaults(func=list_)


def list_(reg: Registry, args: argparse.Namespace) -> int:
    """Print the three tables; exit status 0."""
    def rows(kind: str, table: dict, describe) -> list[list[str]]:
        return [[name, describe(item), str(reg.provider(kind, name))] for name, item in sorted(table.items())]

    data = data_locations(args)
    print("Datasets")
    print(tabulate(
        [[n, d.description, str(d.availability(data)), str(reg.provider("dataset", n))]
         for n, d in sorted(reg.datasets.items())],
        headers=["name", "description", "availability", "provided by"], tablefmt="simple",
        maxcolwidths=[None, 60, 60, None]))
    print("\nComposers")
    print(tabulate(rows("composer", reg.composers,
                        lambda c: c.description + (f" [ablation of {c.ablation_of}]" if c.ablation_of else "")),
                   headers=["name", "description", "provided by"], tablefmt="simple",
                   maxcolwidths=[None, 80, None]))
    print("\nProtocols")
    print(tabulate(
        [[p.label, p.description, str(reg.provider("protocol", n))] for n, p in sorted(reg.protocols.items())],
        headers=["name@hash", "description", "provided by"], tablefmt="simple",
        maxcolwidths=[None, 80, None]))
    return 0
