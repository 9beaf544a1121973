"""Model inputs (``cirbench.data.model_inputs``): uint8 images normalised with the protocol's
``image_mean`` / ``image_std`` (default: ImageNet's), on every path that feeds a composer."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from cirbench import Composer, ComposerContext
from cirbench.data.contract import CIRDataset, Query, Triplet
from cirbench.data.model_inputs import IMAGENET_MEAN, IMAGENET_STD, normalize_images
from cirbench.protocol import BUILTIN_PROTOCOLS

SMOKE = next(p for p in BUILTIN_PROTOCOLS if p.name == "smoke")
#: a protocol with its own statistics (a model trained from scratch on other images, say)
OWN = dataclasses.replace(SMOKE, image_mean=(0.5, 0.25, 0.2), image_std=(0.5, 0.25, 0.1))
#: one pixel, R G B = 255, 0, 51 (51 / 255 = 0.2)
PIXEL = (255, 0, 51)
#: by hand under OWN: R (1 - 0.5) / 0.5 = 1; G (0 - 0.25) / 0.25 = -1; B (0.2 - 0.2) / 0.1 = 0
PIXEL_OWN = (1.0, -1.0, 0.0)
#: by hand under ImageNet's: R (1 - 0.485) / 0.229 = 2.248908..., G (0 - 0.456) / 0.224 =
#: -2.035714..., B (0.2 - 0.406) / 0.225 = -0.915555...
PIXEL_IMAGENET = (2.2489083, -2.0357143, -0.9155556)


def _image(pixel=PIXEL, b: int = 2, size: int = 4) -> torch.Tensor:
    return torch.tensor(pixel, dtype=torch.uint8).view(1, 3, 1, 1).expand(b, 3, size, size).contiguous()


def _channels(x: torch.Tensor) -> list[float]:
    assert torch.equal(x, x[:1, :, :1, :1].expand_as(x))  # every pixel of every image the same
    return x[0, :, 0, 0].tolist()


def test_default_statistics_are_imagenets():
    assert (SMOKE.image_mean, SMOKE.image_std) == (IMAGENET_MEAN, IMAGENET_STD)
    assert IMAGENET_MEAN == (0.485, 0.456, 0.406) and IMAGENET_STD == (0.229, 0.224, 0.225)
    out = normalize_images(_image())
    assert out.dtype == torch.float32 and out.shape == (2, 3, 4, 4)
    assert _channels(out) == pytest.approx(PIXEL_IMAGENET, abs=1e-6)
    # a preset at its defaults normalises exactly as before the fields existed
    assert torch.equal(normalize_images(_image(), "cpu", SMOKE), out)


def test_a_protocols_own_statistics_are_used():
    assert _channels(normalize_images(_image(), "cpu", OWN)) == pytest.approx(PIXEL_OWN, abs=1e-6)
    # explicit statistics win over the protocol's
    explicit = normalize_images(_image(), "cpu", SMOKE, mean=OWN.image_mean, std=OWN.image_std)
    assert _channels(explicit) == pytest.approx(PIXEL_OWN, abs=1e-6)


@settings(max_examples=50, deadline=None)
@given(
    st.tuples(*[st.integers(0, 255)] * 3),
    st.tuples(*[st.floats(-1, 1)] * 3),
    st.tuples(*[st.floats(0.05, 2)] * 3),
)
def test_normalisation_inverts_to_the_pixel(pixel, mean, std):
    protocol = dataclasses.replace(SMOKE, image_mean=mean, image_std=std)
    out = torch.tensor(_channels(normalize_images(_image(pixel, b=1, size=1), "cpu", protocol)), dtype=torch.float64)
    back = (out * torch.tensor(std, dtype=torch.float64) + torch.tensor(mean, dtype=torch.float64)) * 255
    assert back.tolist() == pytest.approx(list(pixel), abs=1e-3)


@pytest.mark.parametrize(
    "images",
    [torch.zeros(1, 3, 4, 4), torch.zeros(1, 1, 4, 4, dtype=torch.uint8), torch.zeros(3, 4, 4, dtype=torch.uint8)],
)
def test_anything_but_uint8_b3hw_is_refused(images):
    with pytest.raises(ValueError, match=r"uint8 \[B, 3, H, W\]"):
        normalize_images(images)


def test_statistics_that_are_not_three_values_are_refused():
    with pytest.raises(ValueError, match="3 means"):
        normalize_images(_image(), mean=(0.5, 0.5), std=(1, 1, 1))
    with pytest.raises(ValueError, match="stds > 0"):
        normalize_images(_image(), mean=(0.5, 0.5, 0.5), std=(1, 0, 1))


# --- every path that feeds a composer uses the protocol's statistics ---------------------------


class _OnePixelData(CIRDataset):
    name = "one-pixel"
    base_loss = "soft_triplet"

    def num_images(self):
        return 2

    def images(self, ids):
        return _image(b=len(ids))

    def train_triplets(self):
        return [Triplet(0, "x", 1), Triplet(1, "x", 0)]

    def queries(self):
        return [Query(0, "x", (1,))]

    def gallery(self, group=None):
        return np.arange(2)


class _Recorder(Composer):
    """Embeds an image as its per-channel mean; remembers what training saw."""

    def __init__(self, ctx):
        super().__init__(ctx)
        self.w = nn.Parameter(torch.ones(3))
        self.seen: list[torch.Tensor] = []

    def compose(self, images, texts):
        return images.mean(dim=(2, 3)) * self.w

    def embed_target(self, images):
        return images.mean(dim=(2, 3)) * self.w

    def attention_maps(self, images, texts):
        return {"red": images[:, 0]}  # the R channel: 1.0 under OWN (non-negative)

    def training_loss(self, batch):
        self.seen.append(batch.reference_images.detach().clone())
        return {"base": (self.compose(batch.reference_images, batch.texts) ** 2).sum()}


def _recorder(protocol) -> _Recorder:
    return _Recorder(ComposerContext(protocol=protocol, train_texts=["x"]))


def test_evaluation_and_attention_maps_normalise_with_the_protocols_statistics():
    from cirbench.attention import compute_attention_maps
    from cirbench.evaluate import embed_images, embed_queries

    comp = _recorder(OWN)
    data = _OnePixelData()
    assert embed_images(comp, data, [0, 1], 2)[0].tolist() == pytest.approx(PIXEL_OWN, abs=1e-6)
    assert embed_queries(comp, data, data.queries(), 2)[0].tolist() == pytest.approx(PIXEL_OWN, abs=1e-6)
    maps = compute_attention_maps(comp, _image(b=1), ["x"])
    assert maps["red"].shape == (1, 4, 4) and torch.allclose(maps["red"], torch.ones(1, 4, 4))
    # the same composer under the default protocol sees ImageNet-normalised pixels
    default = _recorder(SMOKE)
    assert embed_images(default, data, [0], 1)[0].tolist() == pytest.approx(PIXEL_IMAGENET, abs=1e-6)


def test_training_batches_normalise_with_the_protocols_statistics():
    from cirbench.train import train

    comp = _recorder(dataclasses.replace(OWN, iterations=1, batch_size=2))
    train(comp, _OnePixelData(), comp.ctx.protocol, seed=0, checkpoint_seconds=None)
    assert comp.seen and _channels(comp.seen[0]) == pytest.approx(PIXEL_OWN, abs=1e-6)
