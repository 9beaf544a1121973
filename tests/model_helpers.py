"""Helpers shared by the per-equation tests of the reference composers (TIRG, ComposeAE)."""

from __future__ import annotations

import torch
from torch import nn

from cirbench import TrainBatch

#: CSS-style modification texts
TEXTS = [
    "add red cube to top-left",
    "remove blue sphere",
    "make green cylinder large",
    "add gray sphere to center",
    "remove small purple cube",
]


def random_batch(b: int = 4, size: int = 32, seed: int = 0) -> TrainBatch:
    """``b`` random reference and target images (``size`` px) with :data:`TEXTS` cycled."""
    g = torch.Generator().manual_seed(seed)
    return TrainBatch(
        reference_images=torch.randn(b, 3, size, size, generator=g),
        texts=[TEXTS[i % len(TEXTS)] for i in range(b)],
        target_images=torch.randn(b, 3, size, size, generator=g),
        reference_ids=torch.arange(b),
        target_ids=torch.arange(b, 2 * b),
    )


def randomise_bn(bn: nn.modules.batchnorm._BatchNorm, seed: int) -> None:
    """Non-trivial running stats and affine parameters, so eval-mode BN is not the identity."""
    g = torch.Generator().manual_seed(seed)
    n = bn.num_features
    with torch.no_grad():
        bn.running_mean.copy_(torch.randn(n, generator=g, dtype=torch.float64).to(bn.running_mean))
        var = torch.rand(n, generator=g, dtype=torch.float64) + 0.5
        bn.running_var.copy_(var.to(bn.running_var))
        bn.weight.copy_(torch.randn(n, generator=g, dtype=torch.float64).to(bn.weight))
        bn.bias.copy_(torch.randn(n, generator=g, dtype=torch.float64).to(bn.bias))
