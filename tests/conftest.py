"""Shared fixtures: the smoke protocol, a tiny in-test composer plugin and dataset plugin."""

from __future__ import annotations

import dataclasses
import textwrap
from pathlib import Path

import pytest

from cirbench import DatasetContext
from cirbench.protocol import BUILTIN_PROTOCOLS

SMOKE = next(p for p in BUILTIN_PROTOCOLS if p.name == "smoke")

# A complete third-party plugin package: one composer ("pixel-mean") that is cheap enough
# for end-to-end tests, written exactly as an outside author would (public API only).
EXTERNAL_PLUGIN = textwrap.dedent(
    '''
    """An example third-party cirbench plugin: one tiny composer."""
    import torch
    from torch import nn

    import cirbench
    from cirbench import NormalizationLayer, base_loss


    class PixelMean(cirbench.Composer):
        """Query = linear map of [pooled pixels, bag of words]; target = pooled pixels."""

        def __init__(self, ctx):
            super().__init__(ctx)
            d = ctx.protocol.embed_dim
            self.vocab = {w: i for i, w in enumerate(sorted({w for t in ctx.train_texts for w in t.split()}))}
            self.words = nn.EmbeddingBag(len(self.vocab) + 1, d, mode="mean")
            self.image = nn.Linear(3 * 16, d)
            self.norm = NormalizationLayer()

        def _pixels(self, images):
            return self.image(nn.functional.adaptive_avg_pool2d(images, 4).flatten(1))

        def compose(self, images, texts):
            ids = [torch.tensor([self.vocab.get(w, len(self.vocab)) for w in t.split()] or [len(self.vocab)]) for t in texts]
            offsets = torch.tensor([0] + [len(i) for i in ids[:-1]]).cumsum(0)
            return self._pixels(images) + self.words(torch.cat(ids).to(images.device), offsets.to(images.device))

        def embed_target(self, images):
            return self._pixels(images)

        def training_loss(self, batch):
            q = self.compose(batch.reference_images, batch.texts)
            t = self.embed_target(batch.target_images)
            return {"base": base_loss(self.ctx.base_loss, self.norm(q), self.norm(t))}


    @cirbench.hookimpl
    def cirbench_composers():
        return [cirbench.ComposerSpec("pixel-mean", PixelMean, "test composer", "none")]
    '''
)


def install_fake_distribution(
    root: Path, dist: str, module: str, source: str, entry_name: str | None = None, version: str = "1.0"
) -> Path:
    """Write ``module.py`` and an installed distribution's metadata (``.dist-info`` with an
    entry point in the group ``cirbench``) under ``root``, as ``pip install`` would."""
    root.mkdir(parents=True, exist_ok=True)
    (root / f"{module}.py").write_text(source)
    info = root / f"{dist.replace('-', '_')}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    (info / "entry_points.txt").write_text(f"[cirbench]\n{entry_name or dist} = {module}\n")
    (info / "RECORD").write_text("")
    return root


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
