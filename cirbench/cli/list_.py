"""``cirbench list``: datasets (and whether each is available here, and the presets meant for
each), composers and protocols (and the datasets each preset is meant for), with the plugin
providing each."""

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
    meant_for: dict[str, list[str]] = {}  # preset -> datasets that name it
    for n, d in sorted(reg.datasets.items()):
        for preset in d.presets:
            meant_for.setdefault(preset, []).append(n)

    def presets(d) -> str:
        return ", ".join(p if p in reg.protocols else f"{p} (not registered)" for p in d.presets) or "-"

    print("Datasets")
    print(tabulate(
        [[n, d.description, presets(d), str(d.availability(data)), str(reg.provider("dataset", n))]
         for n, d in sorted(reg.datasets.items())],
        headers=["name", "description", "presets", "availability", "provided by"], tablefmt="simple",
        maxcolwidths=[None, 50, 20, 40, None]))
    print("\nComposers")
    print(tabulate(rows("composer", reg.composers,
                        lambda c: c.description + (f" [ablation of {c.ablation_of}]" if c.ablation_of else "")),
                   headers=["name", "description", "provided by"], tablefmt="simple",
                   maxcolwidths=[None, 80, None]))
    print("\nProtocols")
    print(tabulate(
        [[p.label, p.description, ", ".join(meant_for.get(n, [])) or "-", str(reg.provider("protocol", n))]
         for n, p in sorted(reg.protocols.items())],
        headers=["name@hash", "description", "for datasets", "provided by"], tablefmt="simple",
        maxcolwidths=[None, 70, 20, None]))
    return 0
