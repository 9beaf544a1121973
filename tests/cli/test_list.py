"""``cirbench list``: each dataset with the presets meant for it, each preset with its datasets."""

from __future__ import annotations

import pytest

from cirbench import DatasetSpec
from cirbench.cli import main
from cirbench.plugins import load_registry


def _row(out: str, first_cell: str) -> str:
    """The first line of the table row whose first cell is ``first_cell``."""
    rows = [line for line in out.splitlines() if line.split(" ", 1)[0] == first_cell]
    assert len(rows) == 1, (first_cell, rows)
    return rows[0]


def test_every_builtin_dataset_names_registered_presets_meant_for_it():
    reg = load_registry()
    for name, spec in reg.datasets.items():
        assert spec.presets, f"dataset {name} names no preset"
        for preset in spec.presets:
            assert preset in reg.protocols, (name, preset)
    # a real dataset's own paper-scale preset comes first; the embedded ones are for quick
    assert reg.dataset("css").presets == ("full-css",)
    assert reg.dataset("cirr-subset").presets == ("full-cirr-subset",)
    assert reg.dataset("fashioniq-joined").presets == ("full-fashioniq",)
    assert reg.dataset("css-synth").presets[0] == "quick"
    # the descriptions of presets set apart from each other say how they differ
    descriptions = [p.description for p in reg.protocols.values()]
    assert len(set(descriptions)) == len(descriptions)


def test_list_shows_presets_beside_datasets_and_datasets_beside_presets(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    datasets, rest = out.split("\nComposers\n")
    protocols = rest.split("\nProtocols\n")[1]
    assert "presets" in datasets.splitlines()[1] and "for datasets" in protocols.splitlines()[0]
    assert " full-css " in _row(datasets, "css") + " "
    assert " full-shoes " in _row(datasets, "shoes") + " "
    assert " quick, smoke, full" in _row(datasets, "css-synth")
    reg = load_registry()
    assert _row(protocols, reg.protocol("full-shoes").label).split()[-6] == "shoes"
    # full-css is meant for both CSS datasets (the list wraps after "css,")
    assert "css, css-2d" in _row(protocols, reg.protocol("full-css").label)


def test_presets_must_be_protocol_names():
    with pytest.raises(TypeError, match="dataset 'x': presets must be a sequence of protocol names"):
        DatasetSpec(name="x", build=lambda ctx: None, presets="quick")
    spec = DatasetSpec(name="x", build=lambda ctx: None, presets=["quick"])
    assert spec.presets == ("quick",)


def test_a_preset_named_by_a_dataset_but_not_registered_is_shown_as_such(capsys, monkeypatch):
    reg = load_registry()
    spec = reg.datasets["css-synth"]
    import dataclasses

    monkeypatch.setitem(reg.datasets, "css-synth", dataclasses.replace(spec, presets=("quick", "nope")))
    from cirbench.cli import list_ as list_cmd
    import argparse

    args = argparse.Namespace(data_root=None, data=[])
    assert list_cmd.list_(reg, args) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    i = lines.index(_row(out, "css-synth"))
    # the presets column (20 wide) wraps: "quick, nope (not" / "registered)"
    assert "quick, nope (not" in lines[i] and "registered)" in lines[i + 1]
    assert "(not registered)" not in _row(out, "fashion-synth")
