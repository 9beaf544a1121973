"""Attention maps: ``cirbench run --save-model`` keeps the trained model, ``cirbench attention``
draws its maps over the reference images (cirbench/attention.py), for any composer that
implements the optional ``Composer.attention_maps``."""

from __future__ import annotations

import pytest
import torch
from PIL import Image
from torch import nn

from cirbench import Composer, ComposerContext
from cirbench.attention import (
    NoAttentionMapsError,
    compute_attention_maps,
    load_saved_model,
    save_attention_overlays,
)
from cirbench.cli import main
from cirbench.composer import supports_attention_maps
from cirbench.evaluate import evaluate
from cirbench.plugins import load_registry
from cirbench.results import ResultsStore, RunKey
from cirbench.runner import Runner, RunOptions

from tests.fixtures.protocols import SMOKE

# tiny tensors: one torch thread is as fast on a quiet machine and much faster on a busy one
pytestmark = pytest.mark.usefixtures("one_torch_thread")

LEVELS = ("layer3", "layer4")  # sac's default levels


@pytest.fixture(scope="module")
def run_dirs(tmp_path_factory):
    """One smoke run of sac on css-synth, seed 0, with --save-model."""
    root = tmp_path_factory.mktemp("attention")
    res, cache = root / "res", root / "cache"
    argv = ["run", "--composer", "sac", "--dataset", "css-synth", "--protocol", "smoke", "--seed", "0",
            "--results", str(res), "--cache-dir", str(cache), "--save-model"]
    assert main(argv) == 0
    return root, res, cache


def _key(seed: int = 0, composer: str = "sac") -> RunKey:
    return RunKey(load_registry().protocol("smoke"), "css-synth", composer, seed)


def _attention(res, cache, out, *extra, composer="sac", seed=0) -> int:
    return main(["attention", "--composer", composer, "--dataset", "css-synth", "--protocol", "smoke",
                 "--seed", str(seed), "--results", str(res), "--cache-dir", str(cache), "--out", str(out),
                 *extra])


def test_save_model_is_recorded(run_dirs):
    _, res, _ = run_dirs
    store, key = ResultsStore(res), _key()
    result = store.read(key)
    assert result.status == "ok"
    path = store.model_path(key)
    assert path.name == "seed0.model.pt" and path.parent == store.path(key).parent
    assert result.saved_model.path == f"{key.protocol.label}/css-synth/sac/seed0.model.pt"
    assert (res / result.saved_model.path).stat().st_size == result.saved_model.bytes > 0
    assert not list(res.rglob("*.tmp")) and not list(res.rglob("*.ckpt"))


def test_saved_model_reproduces_the_metrics(run_dirs):
    _, res, cache = run_dirs
    key = _key()
    runner = Runner(load_registry(), RunOptions(results=res, cache_dir=cache, device=torch.device("cpu")))
    dataset = runner.dataset(key.protocol, key.dataset)
    torch.manual_seed(123)  # a different initialisation: the numbers must come from the file
    composer = load_saved_model(runner.build_composer(key, dataset), runner.store.model_path(key))
    ev = evaluate(composer, dataset, key.protocol.ks,
                  batch_size=key.protocol.eval_batch_size, chunk=key.protocol.eval_chunk)
    stored = runner.store.read(key).metrics
    assert ev.overall == stored.overall
    assert ev.groups == stored.groups


def test_attention_command_writes_overlays_and_index(run_dirs, capsys):
    root, res, cache = run_dirs
    out = root / "maps"
    assert _attention(res, cache, out, "--queries", "3") == 0
    assert "6 attention overlay(s) of 3 queries" in capsys.readouterr().out
    pngs = sorted(out.glob("*.png"))
    assert [p.name for p in pngs] == [f"q{i:05d}_{lv}.png" for i in range(3) for lv in LEVELS]
    for p in pngs:
        assert p.stat().st_size > 2000
        with Image.open(p) as im:
            im.verify()
        with Image.open(p) as im:
            assert im.format == "PNG" and min(im.size) >= 100
    index = (out / "index.md").read_text()
    queries = Runner(load_registry(), RunOptions(res, cache, torch.device("cpu"))).dataset(
        SMOKE, "css-synth").queries()
    for i in range(3):
        assert f"| {i} | {queries[i].text} | {queries[i].reference} |" in index
    assert all(p.name in index for p in pngs)


def test_attention_command_query_indices(run_dirs, capsys):
    root, res, cache = run_dirs
    out = root / "picked"
    assert _attention(res, cache, out, "--query-index", "4", "1") == 0
    assert sorted(p.name for p in out.glob("*.png")) == sorted(
        f"q{i:05d}_{lv}.png" for i in (4, 1) for lv in LEVELS)
    assert _attention(res, cache, out, "--query-index", "100000") == 2
    assert "--query-index 100000: out of range" in capsys.readouterr().err


def test_composer_without_attention_maps_is_a_clear_error(run_dirs, capsys):
    root, res, cache = run_dirs
    assert _attention(res, cache, root / "none", composer="concat") == 2
    err = capsys.readouterr().err
    assert "composer 'concat'" in err and "has no attention maps" in err and "Composer.attention_maps" in err
    assert "Traceback" not in err
    assert not (root / "none").exists()


def test_without_save_model_no_model_file_and_attention_names_it(run_dirs, capsys):
    root, res, cache = run_dirs
    argv = ["run", "--composer", "sac", "--dataset", "css-synth", "--protocol", "smoke", "--seed", "1",
            "--results", str(res), "--cache-dir", str(cache)]
    assert main(argv) == 0
    store, key = ResultsStore(res), _key(seed=1)
    assert store.read(key).status == "ok" and store.read(key).saved_model is None
    assert not store.model_path(key).exists()
    assert sorted(p.name for p in res.rglob("*.model.pt")) == ["seed0.model.pt"]
    capsys.readouterr()
    assert _attention(res, cache, root / "missing", seed=1) == 2
    err = capsys.readouterr().err
    assert f"expected {store.model_path(key)}" in err and "--save-model" in err and "Traceback" not in err
    # asking for the model later runs the finished run again, now keeping it
    assert main(argv + ["--save-model"]) == 0
    assert "1 ran, 0 skipped" in capsys.readouterr().out
    assert store.model_path(key).exists() and store.read(key).saved_model is not None
    # a forced rerun without --save-model removes the model that no longer matches its result
    assert main(argv + ["--force"]) == 0
    assert not store.model_path(key).exists() and store.read(key).saved_model is None


# --- the core module, with tiny composers --------------------------------------------------------


class _Tiny(Composer):
    """Attention = a softmax over a 3x3 grid of pooled pixel brightness."""

    def __init__(self, ctx, sign: float = 1.0):
        super().__init__(ctx)
        self.lin = nn.Linear(3, 4)
        self.sign = sign

    def compose(self, images, texts):
        return self.lin(images.mean((2, 3)))

    def embed_target(self, images):
        return self.lin(images.mean((2, 3)))

    def training_loss(self, batch):
        return {"base": self.compose(batch.reference_images, batch.texts).sum()}

    def attention_maps(self, images, texts):
        a = nn.functional.adaptive_avg_pool2d(images.mean(1), 3).flatten(1).softmax(1).view(-1, 3, 3)
        return {"grid": self.sign * a, "grid/2": a[:, :2, :2]}


class _NoMaps(_Tiny):
    attention_maps = Composer.attention_maps


def _ctx():
    return ComposerContext(SMOKE, ["add red cube"])


def test_supports_attention_maps():
    assert supports_attention_maps(_Tiny) and supports_attention_maps(_Tiny(_ctx()))
    assert not supports_attention_maps(_NoMaps) and not supports_attention_maps(_NoMaps(_ctx()))
    with pytest.raises(NotImplementedError, match="_NoMaps does not provide attention maps"):
        _NoMaps(_ctx()).attention_maps(torch.zeros(1, 3, 8, 8), ["x"])


def test_compute_and_save_overlays(tmp_path):
    imgs = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    comp = _Tiny(_ctx()).train()
    maps = compute_attention_maps(comp, imgs, ["a", "b"])
    assert comp.training  # mode restored
    assert maps["grid"].shape == (2, 3, 3)
    torch.testing.assert_close(maps["grid"].sum((1, 2)), torch.ones(2))
    paths = save_attention_overlays(comp, imgs, ["add red cube", "remove | blue"], tmp_path)
    assert [p.name for p in paths] == ["000_grid.png", "001_grid.png", "000_grid-2.png", "001_grid-2.png"]
    with pytest.raises(NoAttentionMapsError, match="_NoMaps does not provide attention maps"):
        compute_attention_maps(_NoMaps(_ctx()), imgs, ["a", "b"])
    with pytest.raises(ValueError, match="'grid': negative values"):
        compute_attention_maps(_Tiny(_ctx(), sign=-1.0), imgs, ["a", "b"])


class _TouchOnLoad:
    """Unpickling this object creates a file: what a malicious model file could do."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        import pathlib

        return (pathlib.Path.touch, (self.path,))


def test_saved_model_loads_tensors_only(tmp_path):
    import pickle

    a, b = _Tiny(_ctx()), _Tiny(_ctx())
    torch.save(a.state_dict(), tmp_path / "ok.model.pt")
    load_saved_model(b, tmp_path / "ok.model.pt")
    assert torch.equal(a.lin.weight, b.lin.weight)
    marker = tmp_path / "pwned"
    torch.save({**a.state_dict(), "evil": _TouchOnLoad(marker)}, tmp_path / "evil.model.pt")
    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
        load_saved_model(b, tmp_path / "evil.model.pt")
    assert not marker.exists()
