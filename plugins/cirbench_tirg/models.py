"""TIRG and TIRGLastConv (docs/papers.md §2; google/tirg ``img_text_composition_models.py``).

Notation: ``x`` = image feature, ``t`` = text feature, ``d`` = the protocol's ``embed_dim``,
``[x, t]`` = concatenation along channels.

* :class:`GatedResidualComposition` (code: ``TIRG.gated_feature_composer``,
  ``res_info_composer``, ``compose_img_text_features``)::

      gate = sigmoid(Linear_{2d->d}(ReLU(BN_{2d}([x, t]))))
      res  = Linear_{2d->d}(ReLU(Linear_{2d->2d}(ReLU(BN_{2d}([x, t])))))
      f    = w_g * gate (.) x + w_r * res,        w_g = 1, w_r = 10 at init (learnable)

  ``gate_layers=2`` gives the paper's two-layer gate ``sigmoid(W_g2 ReLU(W_g1 [x, t]))`` with
  the code's BN in front: BN_{2d} -> Linear_{2d->2d} -> ReLU -> Linear_{2d->d}.
* :class:`ConvGatedResidualComposition` (code: ``TIRGLastConv.mod2d``, ``mod2d_gate``): the
  same rule on the last feature map ``m [B, C, h, w]`` with ``t`` tiled over ``h x w``::

      z   = [m, tile(t)]                                         [B, C+d, h, w]
      mod = Conv3x3_{C+d->C}(ReLU(Conv3x3_{C+d->C+d}(BN2d_{C+d}(z))))
      g   = Conv3x3_{C+d->C}(ReLU(Conv3x3_{C+d->C+d}(BN2d_{C+d}(z))))   (own weights)
      m'  = w_g * sigmoid(g) (.) m + w_r * mod

* :class:`TIRG`, :class:`TIRGLastConv`: the composers. The learnable-scale normaliser
  (``NormalizationLayer``, init 4; code: ``ImgTextCompositionBase.normalization_layer``) is
  applied to query and target inside :meth:`training_loss` only; ``compose`` and
  ``embed_target`` return raw features (code: ``test_retrieval.py`` uses the raw outputs).
* :func:`tirg_param_groups`: TIRG ``main.py`` ``create_model_and_optimizer``: with pretrained
  weights, the image fc at ``lr``, the rest of the backbone at ``0.1 * lr``, everything else
  at ``lr``; otherwise one group.

The loss is the dataset's base loss (``ctx.base_loss``) with the true autograd gradient; the
code's hand-written soft-triplet backward is half of it (see the plugin README).
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

#: TIRG main.py: base learning rate and SGD momentum.
DEFAULT_LR = 0.01
MOMENTUM = 0.9
#: TIRG main.py: the pretrained backbone (except its fc) learns at this fraction of lr.
BACKBONE_LR_MULT = 0.1


def _gate_branch(dim: int, gate_layers: int) -> nn.Sequential:
    """The gate's pre-sigmoid branch on ``[x, t]`` (``2 * dim`` wide).

    ``gate_layers=1`` (code, ``gated_feature_composer``): BN -> ReLU -> Linear(2d, d).
    ``gate_layers=2`` (paper, ``sigmoid(W_g2 ReLU(W_g1 [x, t]))``, with the code's BN in
    front): BN -> Linear(2d, 2d) -> ReLU -> Linear(2d, d).
    """
    if gate_layers == 1:
        return nn.Sequential(nn.BatchNorm1d(2 * dim), nn.ReLU(), nn.Linear(2 * dim, dim))
    if gate_layers == 2:
        return nn.Sequential(
            nn.BatchNorm1d(2 * dim),
            nn.Linear(2 * dim, 2 * dim),
            nn.ReLU(),
            nn.Linear(2 * dim, dim),
        )
    raise ValueError(f"tirg: gate_layers must be 1 (code) or 2 (paper), got {gate_layers!r}")


class GatedResidualComposition(nn.Module):
    """TIRG's composition of vectors, docs/papers.md §2 (code: ``compose_img_text_features``):
    ``f = w_g * sigmoid(gate([x, t])) (.) x + w_r * res([x, t])``.

    ``gate`` and ``res`` each have their own BatchNorm over ``[x, t]`` (as in the code: two
    ``Sequential`` s, each starting with ``BatchNorm1d(2d)``). ``w_g`` and ``w_r`` are the
    code's ``a[0]`` and ``a[1]`` (learnable, init 1 and 10); the code's unused ``a[2:]`` are
    not created.
    """

    def __init__(
        self, dim: int, gate_layers: int = 1, w_g: float = 1.0, w_r: float = 10.0
    ) -> None:
        super().__init__()
        self.dim = dim
        self.gate_layers = gate_layers
        self.gate = _gate_branch(dim, gate_layers)
        self.residual = nn.Sequential(
            nn.BatchNorm1d(2 * dim),
            nn.ReLU(),
            nn.Linear(2 * dim, 2 * dim),
            nn.ReLU(),
            nn.Linear(2 * dim, dim),
        )
        self.w_g = nn.Parameter(torch.tensor(float(w_g)))
        self.w_r = nn.Parameter(torch.tensor(float(w_r)))

    def gate_values(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """``sigmoid(gate([x, t]))`` in ``(0, 1)``, shape ``[B, d]``."""
        return torch.sigmoid(self.gate(torch.cat([x, t], dim=1)))

    def residual_values(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """``res([x, t])``, shape ``[B, d]`` (before the ``w_r`` weight)."""
        return self.residual(torch.cat([x, t], dim=1))

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """See docs/papers.md §2, E2.3."""
        z = torch.cat([x, t], dim=1)
        return self.w_g * torch.sigmoid(self.gate(z)) * x + self.w_r * self.residual(z)


def _conv_branch(channels: int, text_dim: int) -> nn.Sequential:
    """TIRGLastConv's ``mod2d`` / ``mod2d_gate`` shape:
    BN2d(C+d) -> Conv3x3(C+d -> C+d) -> ReLU -> Conv3x3(C+d -> C)."""
    c = channels + text_dim
    return nn.Sequential(
        nn.BatchNorm2d(c),
        nn.Conv2d(c, c, kernel_size=3, padding=1),
        nn.ReLU(),
        nn.Conv2d(c, channels, kernel_size=3, padding=1),
    )


class ConvGatedResidualComposition(nn.Module):
    """TIRGLastConv's composition at map level (docs/papers.md §2 "TIRGLastConv variant"; code:
    ``TIRGLastConv.compose_img_text``): with ``z = [m, tile(t)]``,
    ``m' = w_g * sigmoid(gate(z)) (.) m + w_r * mod(z)``, ``gate`` and ``mod`` two conv
    branches of the same shape (:func:`_conv_branch`) with their own weights."""

    def __init__(self, channels: int, text_dim: int, w_g: float = 1.0, w_r: float = 10.0) -> None:
        super().__init__()
        self.channels = channels
        self.text_dim = text_dim
        self.mod = _conv_branch(channels, text_dim)
        self.gate = _conv_branch(channels, text_dim)
        self.w_g = nn.Parameter(torch.tensor(float(w_g)))
        self.w_r = nn.Parameter(torch.tensor(float(w_r)))

    @staticmethod
    def tile(fmap: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """``[m, t tiled over every position]``: ``[B, C + d, h, w]``."""
        b, _, h, w = fmap.shape
        return torch.cat([fmap, t[:, :, None, None].expand(b, t.shape[1], h, w)], dim=1)

    def forward(self, fmap: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        z = self.tile(fmap, t)
        return self.w_g * torch.sigmoid(self.gate(z)) * fmap + self.w_r * self.mod(z)


def tirg_param_groups(
    model: nn.Module,
    image_encoder: ImageEncoder,
    lr: float = DEFAULT_LR,
    pretrained: bool = False,
    backbone_lr_mult: float = BACKBONE_LR_MULT,
) -> list[dict]:
    """SGD parameter groups of TIRG ``main.py`` (``create_model_and_optimizer``).

    ``pretrained`` (any non-CSS dataset in the code, whose backbone is always ImageNet
    weights; here: the protocol's ``pretrained``): three groups, ``image_fc`` at ``lr``,
    ``backbone`` (the ResNet trunk without the fc) at ``backbone_lr_mult * lr`` and ``rest``
    (text encoder, composition, normaliser) at ``lr``. Otherwise one group ``all`` at ``lr``.
    Only trainable parameters are listed; every one appears in exactly one group.

    See docs/papers.md §2.
    """
    return image_encoder_param_groups(model, image_encoder, lr, pretrained, backbone_lr_mult)


class _TIRGBase(Composer):
    """Shared parts of both TIRG composers: TIRG's image model (protocol backbone + Linear to
    ``d``), its LSTM text model, the normaliser, the loss and the optimiser.

    ``joint_backbone`` (default True): :meth:`training_loss` runs the backbone once on
    ``cat([reference_images, target_images])`` and splits the result, so the backbone's
    BatchNorm layers (train mode) normalise over the joint ``2B`` images; the code runs two
    passes of ``B`` images each. False gives the code's two passes (about 5 % slower for the
    backbone on CPU; see the README).
    """

    def __init__(
        self,
        ctx: ComposerContext,
        *,
        w_g: float = 1.0,
        w_r: float = 10.0,
        norm_scale: float = 4.0,
        lr: float = DEFAULT_LR,
        joint_backbone: bool = True,
    ) -> None:
        super().__init__(ctx)
        d = ctx.protocol.embed_dim
        self.lr = lr
        self.composition_init = (float(w_g), float(w_r))  # (w_g, w_r) at init, for the composition
        self.joint_backbone = joint_backbone
        self.image_encoder = ImageEncoder(ctx.protocol)
        self.text_encoder = LSTMTextEncoder(ctx.train_texts, out_dim=d)
        self.normalize = NormalizationLayer(norm_scale)

    # --- query / target -------------------------------------------------------------------
    def embed_target(self, images: torch.Tensor) -> torch.Tensor:
        """Raw target feature: backbone -> average pool -> fc (code: ``extract_img_feature``)."""
        return self.image_encoder(images)

    def _query_and_target(self, batch: TrainBatch) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    # --- training ------------------------------------------------------------------------
    def training_loss(self, batch: TrainBatch) -> dict[str, torch.Tensor]:
        """``{"base": L(N(q), N(t))}``, ``L`` the dataset's base loss (``ctx.base_loss``:
        soft triplet for CSS/MIT-States, batch classification for fashion data), ``N`` the
        shared learnable-scale normaliser (code: ``ImgTextCompositionBase.compute_loss``)."""
        q, t = self._query_and_target(batch)
        return {"base": base_loss(self.ctx.base_loss, self.normalize(q), self.normalize(t))}

    def param_groups(self, pretrained: bool | None = None) -> list[dict]:
        """:func:`tirg_param_groups` for this model (``pretrained`` defaults to the
        protocol's; the trunk's factor is the protocol's ``backbone_lr_mult``: 1.0, one
        group, on ``full-css`` as TIRG's code does for CSS)."""
        if pretrained is None:
            pretrained = bool(self.ctx.protocol.pretrained)
        return tirg_param_groups(
            self, self.image_encoder, self.lr, pretrained, self.ctx.protocol.backbone_lr_mult
        )

    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        """TIRG ``main.py``: SGD, momentum 0.9, lr 0.01, the protocol's weight decay, the
        parameter groups of :meth:`param_groups`. The engine applies the step decay."""
        return [
            torch.optim.SGD(
                self.param_groups(),
                lr=self.lr,
                momentum=MOMENTUM,
                weight_decay=self.ctx.protocol.weight_decay,
            )
        ]


class TIRG(_TIRGBase):
    """TIRG (docs/papers.md §2; code: class ``TIRG``): ``f = w_g * gate (.) x + w_r * res`` on the
    image feature ``x`` and the text feature ``t`` (:class:`GatedResidualComposition`).

    Keywords (defaults = the public code): ``gate_layers`` 1 (code) or 2 (paper),
    ``w_g`` 1.0, ``w_r`` 10.0, ``norm_scale`` 4.0, ``lr`` 0.01, ``joint_backbone`` True.
    """

    def __init__(self, ctx: ComposerContext, *, gate_layers: int = 1, **kwargs) -> None:
        super().__init__(ctx, **kwargs)
        d = ctx.protocol.embed_dim
        self.composition = GatedResidualComposition(d, gate_layers, *self.composition_init)

    def compose(self, images: torch.Tensor, texts: Sequence[str]) -> torch.Tensor:
        """Raw query feature ``f`` (code: ``compose_img_text``)."""
        return self.composition(self.image_encoder(images), self.text_encoder(texts))

    def _query_and_target(self, batch: TrainBatch) -> tuple[torch.Tensor, torch.Tensor]:
        b = len(batch)
        if self.joint_backbone:
            feats = self.image_encoder(
                torch.cat([batch.reference_images, batch.target_images], dim=0)
            )
            x, target = feats[:b], feats[b:]
        else:
            x = self.image_encoder(batch.reference_images)
            target = self.image_encoder(batch.target_images)
        return self.composition(x, self.text_encoder(batch.texts)), target


class TIRGLastConv(_TIRGBase):
    """TIRGLastConv (docs/papers.md §2 "TIRGLastConv variant"; code: class ``TIRGLastConv``):
    the text tiled over the backbone's ``layer4`` map, ``m' = w_g * sigmoid(gate) (.) m +
    w_r * mod`` (:class:`ConvGatedResidualComposition`), then average pool and the image fc.
    The target is average pool + fc of the plain map (= :meth:`embed_target`).

    Keywords as :class:`TIRG` except ``gate_layers`` (the code has one conv gate shape only).
    """

    def __init__(self, ctx: ComposerContext, **kwargs) -> None:
        super().__init__(ctx, **kwargs)
        d = ctx.protocol.embed_dim
        channels = self.image_encoder.backbone.stage_dims["layer4"]
        self.composition = ConvGatedResidualComposition(channels, d, *self.composition_init)

    def _layer4(self, images: torch.Tensor) -> torch.Tensor:
        return self.image_encoder.backbone.feature_maps(images, ("layer4",))["layer4"]

    def _pool_fc(self, fmap: torch.Tensor) -> torch.Tensor:
        return self.image_encoder.fc(fmap.mean(dim=(2, 3)))

    def compose_map(self, images: torch.Tensor, texts: Sequence[str]) -> torch.Tensor:
        """The composed ``layer4`` map ``m'`` ``[B, C, h, w]`` (before pool + fc)."""
        return self.composition(self._layer4(images), self.text_encoder(texts))

    def compose(self, images: torch.Tensor, texts: Sequence[str]) -> torch.Tensor:
        """Raw query feature: fc(avgpool(m'))."""
        return self._pool_fc(self.compose_map(images, texts))

    def _query_and_target(self, batch: TrainBatch) -> tuple[torch.Tensor, torch.Tensor]:
        b = len(batch)
        if self.joint_backbone:
            maps = self._layer4(torch.cat([batch.reference_images, batch.target_images], dim=0))
            ref_map, tgt_map = maps[:b], maps[b:]
        else:
            ref_map = self._layer4(batch.reference_images)
            tgt_map = self._layer4(batch.target_images)
        query = self._pool_fc(self.composition(ref_map, self.text_encoder(batch.texts)))
        return query, self._pool_fc(tgt_map)

