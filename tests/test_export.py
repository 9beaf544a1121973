"""Exports for hidden test splits (cirbench/export.py, the cirr and fashioniq loaders' test
splits): the files CIRR's server and FashionIQ's starter kit read, on tiny fixtures.

The composer here is a fixed function (no training): a gallery image embeds to its mean
(normalised) colour plus a constant 1; a query to the same with the text's length added to
the last entry. So every expected ranking can be recomputed independently with plain Python
cosines.
"""

from __future__ import annotations

from tests.fixtures.export import _quiet, cirr_root  # noqa: F401  (pytest fixtures)


def test_datasets_without_hidden_split_are_refused_by_the_cli(tmp_path, capsys):
    from cirbench.cli import main

    rc = main(["export", "--composer", "concat", "--dataset", "css-synth", "--protocol", "smoke",
               "--out", str(tmp_path / "o"), "--results", str(tmp_path / "r"),
               "--cache-dir", str(tmp_path / "c")])
    assert rc == 2
    assert "has no hidden test split" in capsys.readouterr().err


def test_cli_export_needs_a_saved_model(cirr_root, tmp_path, capsys):
    from cirbench.cli import main

    rc = main(["export", "--composer", "concat", "--dataset", "cirr", "--protocol", "smoke",
               "--data-root", str(cirr_root), "--out", str(tmp_path / "o"),
               "--results", str(tmp_path / "r"), "--cache-dir", str(tmp_path / "c")])
    assert rc == 2
    err = capsys.readouterr().err
    assert "no saved model" in err and "--save-model" in err
