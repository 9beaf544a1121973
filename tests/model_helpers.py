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
#: a text that is not among :data:`TEXTS`
UNSEEN = "make the yellow cube small"
#: width of the tiny BERT of :func:`write_tiny_bert`
TINY_HIDDEN = 24


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


def write_tiny_bert(path, seed: int = 0, hidden: int = TINY_HIDDEN):
    """A randomly initialised BERT (2 layers, ``hidden`` wide) and a BertTokenizer over a tiny
    vocabulary, saved as a transformers model directory."""
    from transformers import BertConfig, BertModel, BertTokenizer

    path.mkdir(parents=True, exist_ok=True)
    words = sorted({w for t in TEXTS + [UNSEEN] for w in t.replace("-", " - ").split()})
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + words
    (path / "vocab.txt").write_text("\n".join(vocab) + "\n")
    BertTokenizer(str(path / "vocab.txt")).save_pretrained(str(path))
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=hidden,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=64,
    )
    torch.manual_seed(seed)
    BertModel(config).save_pretrained(str(path))
    return path
