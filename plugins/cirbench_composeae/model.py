"""The ComposeAE composer (docs/papers.md §3; ecom-research/ComposeAE
``img_text_composition_models.py`` class ``ComposeAE``, ``main.py`` ``train_loop``).

Query: ``v = f(z, q) = a rho(phi) + b rho_conv(...)`` with ``z`` the reference image's feature
(:class:`cirbench.encoders.ImageEncoder`, the protocol's backbone + ``Linear`` to ``d``) and
``q`` the modification text's feature (:mod:`.modules` has every equation). Gallery: ``z``.

Training objective (code: ``compute_loss`` and ``train_loop``; ``N`` = the shared
learnable-scale normaliser, init 4; ``L`` = the dataset's base loss)::

    base      = 1    * L(N(f(z_src, q, c=+1)), N(z_tgt))
    rec_image = 0.1  * MSE(z_hat, z_src)          z_hat = image decoder(v)
    rec_text  = 0.1  * MSE(q_hat, q)              q_hat = text decoder(v)
    sym       = 0.01 * L(N(f(z_tgt, q, c=-1)), N(z_src))

:meth:`ComposeAE.training_loss` returns these four *weighted* parts, so their sum is the
objective the engine minimises. The query is always the modification text (docs/papers.md §0
decision 1: the code's "complete text query", which feeds the target caption, is not
available here).
"""

from __future__ import annotations

import os
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from cirbench import (
    Composer,
    ComposerContext,
    ImageEncoder,
    LSTMTextEncoder,
    NormalizationLayer,
    SentenceEncoder,
    TrainBatch,
    base_loss,
    image_encoder_param_groups,
)

from cirbench_composeae.modules import ComposeAEComposition, ImageDecoder, TextDecoder
from cirbench_composeae.text import FrozenTextEmbeddings, resolve_text_model

#: ComposeAE main.py: base learning rate, SGD momentum, backbone learning-rate factor.
DEFAULT_LR = 0.01
MOMENTUM = 0.9
BACKBONE_LR_MULT = 0.1
#: ComposeAE main.py ``loss_weights``: base, image reconstruction, text reconstruction, symmetry.
LOSS_WEIGHTS = (1.0, 0.1, 0.1, 0.01)
LOSS_NAMES = ("base", "rec_image", "rec_text", "sym")
TEXT_ENCODERS = ("bert", "lstm")


def composeae_param_groups(
    model: nn.Module,
    image_encoder: ImageEncoder,
    lr: float = DEFAULT_LR,
    pretrained: bool = False,
    backbone_lr_mult: float = BACKBONE_LR_MULT,
) -> list[dict]:
    """SGD parameter groups of ComposeAE ``main.py`` (= TIRG's rule): with a pretrained
    backbone, ``image_fc`` at ``lr``, the rest of the backbone at ``backbone_lr_mult * lr`` and
    everything else at ``lr``; otherwise one group. Only trainable parameters are listed (the
    frozen sentence encoder never is), each in exactly one group.

    See docs/papers.md §3."""
    return image_encoder_param_groups(model, image_encoder, lr, pretrained, backbone_lr_mult)


class ComposeAE(Composer):
    """ComposeAE (Anwaar, Labintcev, Kleinsteuber, WACV 2021; docs/papers.md §3).

    Keywords (defaults = the public code, except where docs/papers.md §0 decides otherwise):

    * ``text_encoder``: ``"bert"`` (default): frozen mean-pooled sentence vectors of a local
      BERT-family model (:class:`cirbench.encoders.SentenceEncoder`); ``"lstm"``: TIRG's
      trainable vocabulary LSTM with output ``d`` (the "random embedding" variant in SAC's
      tables; the code's LSTM would not fit its 768-wide modules).
    * ``text_model``: the BERT-family directory (else ``$CIRBENCH_COMPOSEAE_TEXT_MODEL``, else
      the packaged all-MiniLM-L6-v2); ``gamma``'s input and ``q_hat``'s width follow its
      hidden size. ``text_layer``: which layer is mean-pooled (-1 last; bert-as-service's
      default is -2); ``text_max_length``: tokens per text (bert-as-service's default: 25;
      ours: the model's own limit, 256 for MiniLM).
    * ``a``, ``b`` (10, 1): initial weights of ``rho`` and ``rho_conv``; ``norm_scale`` (4);
      ``loss_weights`` (1, 0.1, 0.1, 0.01); ``lr`` (0.01).
    * ``joint_backbone`` (True): one backbone pass on ``cat([reference, target])`` in training
      (the code runs two passes; BatchNorm then normalises over the 2B images jointly).
    """

    def __init__(
        self,
        ctx: ComposerContext,
        *,
        text_encoder: str = "bert",
        text_model: str | os.PathLike | None = None,
        text_layer: int = -1,
        text_max_length: int | None = None,
        a: float = 10.0,
        b: float = 1.0,
        norm_scale: float = 4.0,
        loss_weights: Sequence[float] = LOSS_WEIGHTS,
        lr: float = DEFAULT_LR,
        joint_backbone: bool = True,
    ) -> None:
        super().__init__(ctx)
        if text_encoder not in TEXT_ENCODERS:
            raise ValueError(
                f"composeae: text_encoder must be one of {TEXT_ENCODERS}, got {text_encoder!r}"
            )
        if len(loss_weights) != 4:
            raise ValueError(f"composeae: loss_weights needs 4 values {LOSS_NAMES}, got {loss_weights!r}")
        d = ctx.protocol.embed_dim
        self.text_encoder_kind = text_encoder
        self.loss_weights = tuple(float(w) for w in loss_weights)
        self.lr = float(lr)
        self.joint_backbone = joint_backbone
        self.image_encoder = ImageEncoder(ctx.protocol)
        if text_encoder == "bert":
            model_dir, name = resolve_text_model(text_model)
            encoder = SentenceEncoder(
                model_dir, name=name, layer=text_layer, max_length=text_max_length
            )
            self.text_features: nn.Module = FrozenTextEmbeddings(
                encoder, ctx.train_texts, ctx.cache_dir, ctx.dataset
            )
        else:
            self.text_features = LSTMTextEncoder(ctx.train_texts, out_dim=d)
        self.text_dim: int = int(self.text_features.out_dim)
        self.composition = ComposeAEComposition(d, self.text_dim, a=a, b=b)
        self.image_decoder = ImageDecoder(d)
        self.text_decoder = TextDecoder(d, self.text_dim)
        self.normalize = NormalizationLayer(norm_scale)

    # --- features ----------------------------------------------------------------------------
    def text(self, texts: Sequence[str]) -> torch.Tensor:
        """``q`` ``[B, t]``: frozen sentence vectors, or the LSTM's output."""
        return self.text_features(list(texts))

    def embed_target(self, images: torch.Tensor) -> torch.Tensor:
        """Raw gallery feature ``z`` (code: ``extract_img_feature``)."""
        return self.image_encoder(images)

    def compose(self, images: torch.Tensor, texts: Sequence[str]) -> torch.Tensor:
        """Raw query feature ``v = f(z, q, c=+1)`` (code: ``compose_img_text``'s ``repres``;
        the normaliser is for training only, as in the code's test)."""
        return self.composition(self.image_encoder(images), self.text(texts))

    # --- training ----------------------------------------------------------------------------
    def _image_features(self, batch: TrainBatch) -> tuple[torch.Tensor, torch.Tensor]:
        if self.joint_backbone:
            b = len(batch)
            feats = self.image_encoder(torch.cat([batch.reference_images, batch.target_images]))
            return feats[:b], feats[b:]
        return self.image_encoder(batch.reference_images), self.image_encoder(batch.target_images)

    def loss_terms(self, batch: TrainBatch) -> dict[str, torch.Tensor]:
        """The four *unweighted* terms ``L_base, L_RI, L_RT, L_SYM`` (see the module doc).

        See docs/papers.md §3, E3.9, E3.10 and E3.11."""
        z_src, z_tgt = self._image_features(batch)
        q = self.text(batch.texts)
        v = self.composition(z_src, q)
        z_hat = self.image_decoder(v)
        q_hat = self.text_decoder(v)
        v_sym = self.composition(z_tgt, q, conjugate=True)
        name = self.ctx.base_loss
        return {
            "base": base_loss(name, self.normalize(v), self.normalize(z_tgt)),
            "rec_image": F.mse_loss(z_hat, z_src),
            "rec_text": F.mse_loss(q_hat, q),
            "sym": base_loss(name, self.normalize(v_sym), self.normalize(z_src)),
        }

    def training_loss(self, batch: TrainBatch) -> dict[str, torch.Tensor]:
        """``{"base", "rec_image", "rec_text", "sym"}``, each already multiplied by its weight
        (1, 0.1, 0.1, 0.01 by default): their sum is ComposeAE's total loss.

        See docs/papers.md §3, E3.12."""
        terms = self.loss_terms(batch)
        return {k: w * terms[k] for k, w in zip(LOSS_NAMES, self.loss_weights)}

    def param_groups(self, pretrained: bool | None = None) -> list[dict]:
        """:func:`composeae_param_groups` (``pretrained`` defaults to the protocol's)."""
        if pretrained is None:
            pretrained = bool(self.ctx.protocol.pretrained)
        return composeae_param_groups(
            self, self.image_encoder, self.lr, pretrained, self.ctx.protocol.backbone_lr_mult
        )

    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        """ComposeAE/TIRG ``main.py``: SGD, momentum 0.9, lr 0.01, the protocol's weight decay,
        over the trainable parameters in :meth:`param_groups`."""
        return [
            torch.optim.SGD(
                self.param_groups(),
                lr=self.lr,
                momentum=MOMENTUM,
                weight_decay=self.ctx.protocol.weight_decay,
            )
        ]


def composeae_lstm(ctx: ComposerContext, **kwargs) -> ComposeAE:
    """``composeae-lstm``: ComposeAE with TIRG's trainable LSTM text encoder ("random
    embedding" in SAC's tables).

    See docs/papers.md §3."""
    return ComposeAE(ctx, text_encoder="lstm", **kwargs)
