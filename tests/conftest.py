"""Shared fixtures: the smoke protocol, a tiny in-test composer plugin and dataset plugin."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from cirbench import DatasetContext
from tests.fixtures.external_plugin import EXTERNAL_PLUGIN, install_fake_distribution
from tests.fixtures.protocols import SMOKE


@pytest.fixture
def external_plugin(tmp_path, monkeypatch) -> Path:
    """The example plugin installed as distribution ``cirbench-pixel-mean`` on sys.path."""
    root = install_fake_distribution(tmp_path / "site", "cirbench-pixel-mean", "cirbench_pixel_mean", EXTERNAL_PLUGIN)
    monkeypatch.syspath_prepend(str(root))
    return root


@pytest.fixture
def smoke() -> object:
    return SMOKE


@pytest.fixture
def tiny_protocol():
    """Smoke with an even smaller embedding: for the fastest engine tests."""
    return dataclasses.replace(SMOKE, name="smoke-test", embed_dim=16, iterations=3)


@pytest.fixture(scope="session")
def pixel_mean_cls():
    """The external plugin's composer class, without installing anything."""
    ns: dict = {}
    exec(compile(EXTERNAL_PLUGIN, "<pixel-mean plugin>", "exec"), ns)
    return ns["PixelMean"]


@pytest.fixture(scope="session")
def css_tiny(tmp_path_factory):
    """css-synth at the smoke protocol's scale (built once per session)."""
    from cirbench.plugins import load_registry

    return load_registry().dataset("css-synth").build(DatasetContext(SMOKE, tmp_path_factory.mktemp("css-cache")))


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch intra-op thread for a module of tiny-tensor tests (as fast on a quiet machine,
    many times faster on a busy one: no oversubscription of the cores); restored after it. A
    module asks for it with ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    """A tiny BERT in the sentence-transformers layout (tests/fixtures/models.py)."""
    from tests.fixtures.models import write_tiny_bert

    return write_tiny_bert(tmp_path_factory.mktemp("tiny-bert") / "tiny-bert")
