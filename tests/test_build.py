"""The one factory of a run (cirbench/build.py) and the dataset builders' context: what a
builder receives, the old builder signature refused by name, the runner and the conformance
suite building the same composer."""

from __future__ import annotations

import functools
from pathlib import Path

import pytest
import torch

import cirbench
from cirbench import ComposerSpec, DatasetContext, DatasetSpec, hookimpl
from cirbench.build import build_composer, build_dataset, composer_context
from cirbench.composer import ComposerTypeError
from cirbench.data import DataLayout, DataLocations, Requirement
from cirbench.data.contract import DatasetBuildSignatureError, DatasetTypeError
from cirbench.data.errors import DatasetNotAvailable
from cirbench.plugins import PluginError, load_registry
from cirbench.results import RunKey
from cirbench.runner import RunOptions, Runner
from cirbench.testing import CheckContext
from cirbench.testing.base import CheckFailed
from cirbench.testing.random_data import RandomDataset
from tests.fixtures.protocols import SMOKE
from tests.fixtures.external_plugin import install_fake_distribution


# --- DatasetContext --------------------------------------------------------------------------------
def test_dataset_context_holds_paths_and_is_frozen(tmp_path):
    ctx = DatasetContext(SMOKE, str(tmp_path / "c"), str(tmp_path / "r"))
    assert (ctx.protocol, ctx.cache_dir, ctx.root) == (SMOKE, tmp_path / "c", tmp_path / "r")
    assert DatasetContext(SMOKE).cache_dir is None and DatasetContext(SMOKE).root is None
    with pytest.raises(AttributeError):
        ctx.root = None  # type: ignore[misc]


# --- the builder's signature -----------------------------------------------------------------------
def _new(ctx):
    return RandomDataset(8)


def _with_option(ctx, extra=None):
    return RandomDataset(8)


class _ClassBuilder(RandomDataset):
    def __init__(self, ctx):
        super().__init__(ctx.protocol.image_size)


@pytest.mark.parametrize("build", [
    _new, _with_option, _ClassBuilder, lambda ctx: RandomDataset(8),
    functools.partial(lambda size, ctx: RandomDataset(size), 8),  # one argument left
    lambda *args: RandomDataset(8),
])
def test_a_one_argument_builder_is_accepted(build):
    assert DatasetSpec("ok", build).build is build


@pytest.mark.parametrize("build, required", [
    (lambda protocol, cache_dir: None, 2),
    (lambda protocol, cache_dir, root: None, 3),
    (lambda protocol, cache_dir, root=None: None, 2),  # the old LocalImageDataset.build
])
def test_the_old_builder_signature_is_refused_naming_the_dataset(build, required):
    with pytest.raises(DatasetBuildSignatureError) as err:
        DatasetSpec("old-style", build)
    msg = str(err.value)
    assert msg.startswith("dataset 'old-style': its build")
    assert f"requires {required} positional arguments" in msg
    assert "build(ctx)" in msg and "cirbench.DatasetContext" in msg
    assert isinstance(err.value, TypeError)


def test_a_plugin_with_the_old_signature_is_named_when_the_registry_loads(tmp_path, monkeypatch):
    src = (
        "import cirbench\n"
        "def build(protocol, cache_dir, root=None):\n    raise AssertionError('never called')\n"
        "@cirbench.hookimpl\ndef cirbench_datasets():\n"
        "    return [cirbench.DatasetSpec('legacy-data', build)]\n"
    )
    root = install_fake_distribution(tmp_path, "legacy-dist", "legacy_mod", src, version="2.3")
    monkeypatch.syspath_prepend(str(root))
    with pytest.raises(PluginError) as err:
        load_registry()
    msg = str(err.value)
    for part in ("legacy-dist 2.3", "cirbench_datasets", "DatasetBuildSignatureError", "dataset 'legacy-data'",
                 "build(ctx)"):
        assert part in msg, (part, msg)


# --- build_dataset ---------------------------------------------------------------------------------
def _recording(seen: list):
    def build(ctx):
        seen.append(ctx)
        return RandomDataset(ctx.protocol.image_size)
    return build


def test_an_embedded_dataset_gets_no_root(tmp_path):
    seen: list[DatasetContext] = []
    ds = build_dataset(DatasetSpec("emb", _recording(seen)), SMOKE, str(tmp_path))
    assert seen == [DatasetContext(SMOKE, tmp_path, None)] and isinstance(seen[0].cache_dir, Path)
    assert ds.images([0]).shape == (1, 3, SMOKE.image_size, SMOKE.image_size)


def test_a_local_dataset_gets_its_checked_folder(tmp_path):
    layout = DataLayout(folder="toy", requirements=(Requirement("*.txt", "a text file"),))
    spec = DatasetSpec("toy", _recording(seen := []), layout=layout)
    data = DataLocations(root=tmp_path / "data")
    with pytest.raises(DatasetNotAvailable):  # the folder is checked before build is called
        build_dataset(spec, SMOKE, None, data)
    assert seen == []
    (tmp_path / "data" / "toy").mkdir(parents=True)
    (tmp_path / "data" / "toy" / "a.txt").write_text("x")
    build_dataset(spec, SMOKE, None, data)
    assert seen == [DatasetContext(SMOKE, None, tmp_path / "data" / "toy")]
    # DatasetSpec.create is the same factory
    spec.create(SMOKE, tmp_path / "cache", data)
    assert seen[-1] == DatasetContext(SMOKE, tmp_path / "cache", tmp_path / "data" / "toy")


def test_a_build_returning_no_dataset_names_dataset_and_provider():
    spec = DatasetSpec("not-data", lambda ctx: [1, 2])
    with pytest.raises(DatasetTypeError) as err:
        build_dataset(spec, SMOKE, None, provider="plugin 'p' (distribution d 1.0)")
    assert str(err.value) == ("dataset 'not-data': build(ctx) returned list, expected a cirbench.CIRDataset "
                              "(plugin 'p' (distribution d 1.0))")


# --- build_composer --------------------------------------------------------------------------------
def _weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_composer_context_comes_from_the_dataset(css_tiny, tmp_path):
    ctx = composer_context(SMOKE, css_tiny, device=torch.device("cpu"), cache_dir=str(tmp_path))
    assert ctx.train_texts == sorted({t.text for t in css_tiny.train_triplets()})
    assert (ctx.base_loss, ctx.dataset, ctx.device, ctx.cache_dir) == ("soft_triplet", "css-synth", "cpu", tmp_path)
    other = composer_context(SMOKE, css_tiny, base_loss="batch_classification", dataset_name="renamed")
    assert (other.base_loss, other.dataset, other.cache_dir) == ("batch_classification", "renamed", None)


def test_the_seed_decides_the_initial_weights(css_tiny, pixel_mean_cls):
    spec = ComposerSpec("pixel-mean", pixel_mean_cls)
    a = _weights(build_composer(spec, SMOKE, css_tiny, seed=5))
    torch.rand(100)  # the global generator moves on; the seed resets it
    b = _weights(build_composer(spec, SMOKE, css_tiny, seed=5))
    c = _weights(build_composer(spec, SMOKE, css_tiny, seed=6))
    assert a.keys() == b.keys() == c.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_runner_and_check_context_build_the_same_composer(css_tiny, pixel_mean_cls, tmp_path):
    """The runner and the conformance suite share the factory: same seed, same weights, same
    context but for the cache folder each owns."""
    class Plugin:
        @hookimpl
        def cirbench_composers(self):
            return [ComposerSpec("pixel-mean", pixel_mean_cls)]

    reg = load_registry(extra_plugins=[("pixel-mean-plugin", Plugin())])
    runner = Runner(reg, RunOptions(tmp_path / "res", tmp_path / "cache", torch.device("cpu")))
    ran = runner.build_composer(RunKey(SMOKE, "css-synth", "pixel-mean", 3), css_tiny)
    checked = CheckContext(SMOKE, registry=reg, dataset=css_tiny, cache_dir=tmp_path / "check").build_composer(
        "pixel-mean", seed=3)
    w1, w2 = _weights(ran), _weights(checked)
    assert w1.keys() == w2.keys() and all(torch.equal(w1[k], w2[k]) for k in w1)
    for field in ("protocol", "train_texts", "base_loss", "dataset", "device"):
        assert getattr(ran.ctx, field) == getattr(checked.ctx, field), field
    assert ran.ctx.cache_dir == tmp_path / "cache" and checked.ctx.cache_dir == tmp_path / "check" / "composers"


def test_a_build_returning_no_composer_is_named(css_tiny):
    spec = ComposerSpec("not-a-model", lambda ctx: 42)
    with pytest.raises(ComposerTypeError) as err:
        build_composer(spec, SMOKE, css_tiny, provider="plugin 'q'")
    assert str(err.value) == "composer 'not-a-model': build(ctx) returned int, expected a cirbench.Composer (plugin 'q')"
    with pytest.raises(CheckFailed, match="composer 'not-a-model': build\\(ctx\\) returned int"):
        CheckContext(SMOKE, dataset=css_tiny).build_composer(spec)


def test_build_composer_moves_the_model_to_the_device(css_tiny, pixel_mean_cls):
    model = build_composer(ComposerSpec("pixel-mean", pixel_mean_cls), SMOKE, css_tiny, device="cpu")
    assert isinstance(model, cirbench.Composer)
    assert {p.device.type for p in model.parameters()} == {"cpu"} and model.ctx.device == "cpu"
