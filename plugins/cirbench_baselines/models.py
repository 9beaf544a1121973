"""The single-modality and concatenation baselines of TIRG (docs/papers.md §2, §5).

All three share the protocol's image encoder (backbone + linear to the embedding size) for
gallery images and TIRG's vocabulary LSTM for text, and train with the dataset's base loss
between L2-normalised, learnably scaled query and target embeddings (TIRG's
``NormalizationLayer``, init 4).

* ``image-only``: query = f_img(reference); the text is ignored.
* ``text-only``: query = f_text(text); the reference image is ignored.
* ``concat``: query = MLP([f_img(reference), f_text(text)]), the MLP of TIRG's public
  ``Concat`` model: BN -> ReLU -> Linear(2d, 2d) -> BN -> ReLU -> Dropout(0.1) ->
  Linear(2d, d).

Optimiser (all three): TIRG's ``main.py`` gives every model, baselines included, the same
SGD (momentum 0.9, lr 0.01, the protocol's weight decay) with its parameter groups: with
ImageNet weights the trunk learns at the protocol's ``backbone_lr_mult`` (0.1; 1.0 = one
group on ``full-css``) times lr (:func:`cirbench.encoders.image_encoder_param_groups`).
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from cirbench import (
    Composer,
    ComposerContext,
    ImageEncoder,
    LSTMTextEncoder,
    NormalizationLayer,
    TrainBatch,
    base_loss,
    image_encoder_param_groups,
)


#: TIRG main.py's base learning rate (every model).
LR = 0.01


class _Baseline(Composer):
    """Shared parts: image encoder, text encoder, normaliser and the training objective."""

    def __init__(self, ctx: ComposerContext) -> None:
        super().__init__(ctx)
        d = ctx.protocol.embed_dim
        self.image_encoder = ImageEncoder(ctx.protocol)
        self.text_encoder = LSTMTextEncoder(ctx.train_texts, out_dim=d)
        self.normalize = NormalizationLayer(4.0)

    def embed_target(self, images: torch.Tensor) -> torch.Tensor:
        return self.image_encoder(images)

    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        """TIRG's SGD with TIRG's parameter groups (see the module docstring)."""
        p = self.ctx.protocol
        groups = image_encoder_param_groups(
            self, self.image_encoder, LR, bool(p.pretrained), p.backbone_lr_mult
        )
        return [torch.optim.SGD(groups, lr=LR, momentum=0.9, weight_decay=p.weight_decay)]

    def training_loss(self, batch: TrainBatch) -> dict[str, torch.Tensor]:
        q = self.compose(batch.reference_images, batch.texts)
        t = self.embed_target(batch.target_images)
        return {"base": base_loss(self.ctx.base_loss, self.normalize(q), self.normalize(t))}


class ImageOnly(_Baseline):
    """Query = the reference image's embedding. The text encoder exists but is unused, so it
    is not built: only what the query uses is counted.

    See docs/papers.md §2."""

    def __init__(self, ctx: ComposerContext) -> None:
        Composer.__init__(self, ctx)
        self.image_encoder = ImageEncoder(ctx.protocol)
        self.normalize = NormalizationLayer(4.0)

    def compose(self, images: torch.Tensor, texts: Sequence[str]) -> torch.Tensor:
        return self.image_encoder(images)


class TextOnly(_Baseline):
    """Query = the text's embedding (the gallery side still needs the image encoder).

    See docs/papers.md §2."""

    def compose(self, images: torch.Tensor, texts: Sequence[str]) -> torch.Tensor:
        return self.text_encoder(texts)


class Concat(_Baseline):
    """Query = MLP of the concatenated image and text embeddings.

    See docs/papers.md §2."""

    def __init__(self, ctx: ComposerContext) -> None:
        super().__init__(ctx)
        d = ctx.protocol.embed_dim
        self.mlp = nn.Sequential(
            nn.BatchNorm1d(2 * d),
            nn.ReLU(),
            nn.Linear(2 * d, 2 * d),
            nn.BatchNorm1d(2 * d),
            nn.ReLU(),
            nn.Dropout(0.1),
            nn.Linear(2 * d, d),
        )

    def compose(self, images: torch.Tensor, texts: Sequence[str]) -> torch.Tensor:
        x = self.image_encoder(images)
        t = self.text_encoder(texts)
        return self.mlp(torch.cat([x, t], dim=1))
