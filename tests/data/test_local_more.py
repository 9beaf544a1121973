"""The loaders of FashionIQ, Shoes, Birds-to-Words and CIRR together: registration and presets
(docs/papers.md §1.4-1.7), a smoke run on each, their conformance (their own rules:
tests/plugins/<name>/)."""

from __future__ import annotations

import json

import pytest

from cirbench.data import DataLocations
from cirbench.testing import CheckContext, parametrize_with_checks
from tests.fixtures.more_loaders import MORE, REGISTRY, write_all
from tests.fixtures.more_loaders import _quiet, data_root  # noqa: F401  (pytest fixtures)


# --- registration -----------------------------------------------------------------------------------
def test_datasets_and_protocols_are_registered():
    # name -> (the plugin that provides it, the folder under the data root it reads)
    expected = {"fashioniq": ("fashioniq", "fashioniq"), "fashioniq-joined": ("fashioniq", "fashioniq"),
                "shoes": ("shoes", "shoes"), "birds-to-words": ("birds-to-words", "birds-to-words"),
                "cirr": ("cirr", "cirr"), "cirr-subset": ("cirr", "cirr")}
    assert set(expected) == set(MORE)
    for name in MORE:
        spec = REGISTRY.dataset(name)
        assert (REGISTRY.provider("dataset", name).plugin, spec.layout.folder) == expected[name], name
        assert spec.description.strip() and spec.layout.url.startswith(("http://", "https://")), name
    p = REGISTRY.protocols
    assert p["full-fashioniq"].ks == (10, 50) and p["full-fashioniq"].iterations == 100_000
    assert p["full-fashioniq"].lr_decay_every == 8_000 and p["full-fashioniq"].batch_size == 32
    assert p["full-shoes"].ks == (1, 10, 50)
    assert p["full-birds-to-words"].ks == (10, 50)
    assert p["full-cirr"].ks == (1, 2, 5, 10, 50, 100) and p["full-cirr-subset"].ks == (1, 2, 3)
    # the two CIRR presets differ only in what is reported: the same training
    a, b = p["full-cirr"].as_dict(), p["full-cirr-subset"].as_dict()
    assert {k for k in a if a[k] != b[k]} == {"name", "description", "ks"}


# --- end to end -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["fashioniq", "cirr-subset"])
def test_smoke_run(name, data_root, tmp_path, capsys):
    """``cirbench run`` under ``smoke``: per-category galleries (fashioniq) and per-query
    candidates (cirr-subset) through the whole engine; results per group."""
    from cirbench.cli import main

    argv = ["run", "--dataset", name, "--composer", "image-only", "--protocol", "smoke", "--seed", "0",
            "--results", str(tmp_path / "res"), "--cache-dir", str(tmp_path / "cache"), "--threads", "1",
            "--data-root", str(data_root)]
    assert main(argv) == 0
    assert "ok: R@1" in capsys.readouterr().out
    (result,) = [json.loads(p.read_text()) for p in (tmp_path / "res").rglob("*.json")]
    assert result["status"] == "ok"
    groups = result["metrics"]["groups"]
    if name == "fashioniq":
        assert sorted(groups) == ["dress", "shirt", "toptee"]
    else:  # five candidates besides the reference: R@5 and R@10 are certain
        overall = result["metrics"]["overall"]
        assert overall["R@5"] == overall["R@10"] == 1.0 and result["eval"]["num_queries"] == 2


# --- conformance on the fixtures ------------------------------------------------------------------------------
CONFORMANCE = CheckContext(registry=REGISTRY)


@pytest.fixture(scope="module")
def conformance_data(tmp_path_factory):
    root = write_all(tmp_path_factory.mktemp("conformance-more"))
    CONFORMANCE.data = DataLocations(root=root)
    return root


@parametrize_with_checks(datasets=list(MORE), context=CONFORMANCE)
def test_more_local_datasets_conform(name, check, conformance_data):
    check(name)
