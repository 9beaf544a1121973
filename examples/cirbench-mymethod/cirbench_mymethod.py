"""An example cirbench plugin: one composer, ``mymethod``, written with the public API only.

The query is the protocol's image features and an LSTM's text features, concatenated and
mixed by one linear layer; a gallery image is its image features alone. Trained with the
dataset's base loss (``ctx.base_loss``) between length-normalised embeddings.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

import cirbench
from cirbench import ImageEncoder, LSTMTextEncoder, NormalizationLayer, base_loss


class MyMethod(cirbench.Composer):
    """``compose(images, texts) = Linear([image(images), text(texts)])``, ``[B, D]``;
    ``embed_target(images) = image(images)``, ``[B, D]``; D the protocol's ``embed_dim``."""

    def __init__(self, ctx: cirbench.ComposerContext) -> None:
        super().__init__(ctx)
        d = ctx.protocol.embed_dim
        self.image = ImageEncoder(ctx.protocol)  # the protocol's backbone, then Linear(., d)
        self.text = LSTMTextEncoder(ctx.train_texts, d)  # a vocabulary of the training texts
        self.mix = nn.Linear(2 * d, d)
        self.norm = NormalizationLayer()  # s * v / |v|, s learnt

    def compose(self, images: torch.Tensor, texts: Sequence[str]) -> torch.Tensor:
        return self.mix(torch.cat([self.image(images), self.text(texts)], dim=1))

    def embed_target(self, images: torch.Tensor) -> torch.Tensor:
        return self.image(images)

    def training_loss(self, batch: cirbench.TrainBatch) -> dict[str, torch.Tensor]:
        """Named loss parts (the engine optimises their sum and records each)."""
        q = self.compose(batch.reference_images, batch.texts)
        t = self.embed_target(batch.target_images)
        return {"base": base_loss(self.ctx.base_loss, self.norm(q), self.norm(t))}


@cirbench.hookimpl
def cirbench_composers() -> list[cirbench.ComposerSpec]:
    return [cirbench.ComposerSpec(
        "mymethod", MyMethod,
        description="example plugin: image and text features concatenated, mixed by a linear layer",
        paper="cirbench's example plugin (examples/cirbench-mymethod)",
    )]
