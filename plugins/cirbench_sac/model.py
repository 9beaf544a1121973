"""The SAC composer (Jandial et al., WACV 2022), assembled from :mod:`cirbench_sac.modules`.

Query:  backbone levels V^l -> SFA (Eqs. 4-9) -> O^l -> SFM (Eqs. 10-13) -> f_agg;
        text (Eqs. 2-3) -> T^l, f_text; f_com = composition(f_agg, f_text) (Eq. 14).
Target: backbone levels V_t^l -> GeM -> O_t^l -> SFM target path -> f_tgt.
Losses (Eqs. 15-19): lambda_1 L_triplet + lambda_2 L_adv + lambda_3 L_cons for the composer
(Adam), L_D for the discriminator (its own SGD), in :meth:`SAC.training_step`.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from cirbench import Composer, ComposerContext, TrainBatch
from cirbench.encoders import build_image_backbone

from cirbench_sac.modules import (
    SFA,
    SFM,
    Composition,
    Discriminator,
    SentenceTextEncoder,
    adversarial_loss,
    consistency_loss,
    discriminator_loss,
    sample_negatives,
    triplet_loss,
    valid_negatives,
)

LOSS_SETS = ("triplet", "triplet+cons", "triplet+disc", "triplet+disc+cons")
LEVEL_SETS = ("l1", "l2", "both")


class SAC(Composer):
    """SAC. Every open detail is a keyword (defaults in the plugin README):

    Args:
        stages: the two backbone stages forming levels 1 and 2.
        levels: ``both`` | ``l1`` | ``l2`` (Table 7).
        composition: ``offset`` | ``concat`` | ``gating`` | ``hadamard`` (Table 4).
        losses: ``triplet+disc+cons`` | ``triplet`` | ``triplet+cons`` | ``triplet+disc``
            (Table 6).
        word_dim, sent_dim: F_word and F_sent sizes (Eq. 2).
        text_embeddings: None (random word embeddings over the training vocabulary) or a
            local ``transformers`` model directory whose tokenizer and input embeddings
            (fine-tuned; ``word_dim`` then follows the model) replace them (SAC-BERT).
        qk_reduction: Q/K channels = C // qk_reduction (SAGAN's 8).
        temperature: the semantic-pooling softmax temperature (Eq. 8).
        gem_p, gem_eps: GeM's initial p and clamp.
        common_dim: SFM projection size (None: embed_dim).
        target_head: also apply SFM's BN+Omega head to the target (paper: no).
        delta_init: initial scale of the composition's normalisation (Eq. 14).
        hard_ratio: probability that a row's negative is drawn distance-weighted (else uniform).
        hard_temperature: softmax(-dist / hard_temperature) for the distance weighting.
        disc_slope: LeakyReLU slope in D.
        adversarial: ``non_saturating`` (-log D(f_com)) | ``minimax`` (log(1 - D(f_com))).
        lambdas: weights of (triplet, adversarial, consistency) (Eq. 19).
        alpha_text, alpha_img: consistency weights (Eq. 18).
        lr, disc_lr: Adam lr of everything but D; SGD lr of D.
        freeze_backbone_fraction: the backbone is frozen for the first
            ``round(fraction * protocol.iterations)`` steps.
    """

    automatic_optimization = False

    def __init__(
        self,
        ctx: ComposerContext,
        *,
        stages: tuple[str, str] = ("layer3", "layer4"),
        levels: str = "both",
        composition: str = "offset",
        losses: str = "triplet+disc+cons",
        word_dim: int = 768,
        sent_dim: int = 1024,
        text_embeddings: str | None = None,
        qk_reduction: int = 8,
        temperature: float = 1.0,
        gem_p: float = 3.0,
        gem_eps: float = 1e-6,
        common_dim: int | None = None,
        target_head: bool = False,
        delta_init: float = 4.0,
        hard_ratio: float = 0.5,
        hard_temperature: float = 1.0,
        disc_slope: float = 0.2,
        adversarial: str = "non_saturating",
        lambdas: tuple[float, float, float] = (1.0, 0.6, 0.1),
        alpha_text: float = 1.0,
        alpha_img: float = 0.1,
        lr: float = 1e-3,
        disc_lr: float = 2e-4,
        freeze_backbone_fraction: float = 0.2,
    ) -> None:
        super().__init__(ctx)
        if levels not in LEVEL_SETS:
            raise ValueError(f"sac: levels must be one of {LEVEL_SETS}, got {levels!r}")
        if losses not in LOSS_SETS:
            raise ValueError(f"sac: losses must be one of {LOSS_SETS}, got {losses!r}")
        if adversarial not in ("non_saturating", "minimax"):
            raise ValueError(f"sac: adversarial must be non_saturating or minimax, got {adversarial!r}")
        d = ctx.protocol.embed_dim
        self.backbone = build_image_backbone(ctx.protocol)
        self.stages = tuple({"both": stages, "l1": stages[:1], "l2": stages[1:]}[levels])
        dims = [self.backbone.stage_dims[s] for s in self.stages]
        self.levels, self.losses, self.adversarial = levels, losses, adversarial
        self.text = SentenceTextEncoder(ctx.train_texts, dims, d, word_dim, sent_dim, text_embeddings)
        self.sfa = nn.ModuleList(
            [SFA(c, qk_reduction, temperature, gem_p, gem_eps) for c in dims]
        )
        self.sfm = SFM(dims, common_dim or d, d, target_head)
        self.composition = Composition(d, composition, delta_init)
        self.use_disc = "disc" in losses
        self.use_cons = "cons" in losses
        self.discriminator = Discriminator(d, disc_slope) if self.use_disc else None
        if self.use_cons:
            self.cons_text = nn.Linear(d, d)  # Omega^c_text
            self.cons_img = nn.Linear(d, d)  # Omega^c_img
        self.hard_ratio, self.hard_temperature = float(hard_ratio), float(hard_temperature)
        self.lambdas = tuple(float(x) for x in lambdas)
        self.alpha_text, self.alpha_img = float(alpha_text), float(alpha_img)
        self.lr, self.disc_lr = float(lr), float(disc_lr)
        self.freeze_steps = round(freeze_backbone_fraction * ctx.protocol.iterations)
        self.on_train_step_start(0)  # built in the state of step 0 (frozen when freeze_steps > 0)

    # --- forward paths -----------------------------------------------------------------------

    def _maps(self, images: torch.Tensor) -> list[torch.Tensor]:
        fm = self.backbone.feature_maps(images, self.stages)
        return [fm[s] for s in self.stages]

    def _query(self, maps: Sequence[torch.Tensor], texts: Sequence[str]):
        t_levels, f_text = self.text(texts)
        pooled, attn = [], []
        for sfa, v, t in zip(self.sfa, maps, t_levels):
            o, m = sfa(v, t)
            pooled.append(o)
            attn.append(m)
        f_agg = self.sfm(pooled)
        return self.composition(f_agg, f_text), f_text, attn

    def _target(self, maps: Sequence[torch.Tensor]) -> torch.Tensor:
        return self.sfm.target([sfa.target(v) for sfa, v in zip(self.sfa, maps)])

    def compose(self, images: torch.Tensor, texts: Sequence[str]) -> torch.Tensor:
        return self._query(self._maps(images), texts)[0]

    def embed_target(self, images: torch.Tensor) -> torch.Tensor:
        return self._target(self._maps(images))

    @torch.no_grad()
    def attention_maps(self, images: torch.Tensor, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        """Eq. 8's semantic attention ``M`` per level: ``{stage: [B, H, W]}`` (Fig. 4)."""
        _, _, attn = self._query(self._maps(images), texts)
        return dict(zip(self.stages, attn))

    # --- training ----------------------------------------------------------------------------

    def main_parameters(self) -> list[nn.Parameter]:
        """Everything but D, frozen backbone included (Adam skips params without grad)."""
        disc = {id(p) for p in self.discriminator.parameters()} if self.discriminator else set()
        return [p for p in self.parameters() if id(p) not in disc]

    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        opts: list[torch.optim.Optimizer] = [
            torch.optim.Adam(self.main_parameters(), lr=self.lr, weight_decay=self.ctx.protocol.weight_decay)
        ]
        if self.discriminator is not None:
            opts.append(torch.optim.SGD(self.discriminator.parameters(), lr=self.disc_lr))
        return opts

    def on_train_step_start(self, step: int) -> None:
        """Backbone frozen for the first ``freeze_steps`` steps (paper: 10 epochs)."""
        self.backbone.requires_grad_(step >= self.freeze_steps)

    def _forward_train(self, batch: TrainBatch):
        b = len(batch)
        maps = self._maps(torch.cat([batch.reference_images, batch.target_images]))  # one pass
        f_com, f_text, _ = self._query([m[:b] for m in maps], batch.texts)
        f_tgt = self._target([m[b:] for m in maps])
        return f_com, f_text, f_tgt

    def _main_loss(self, batch: TrainBatch, f_com, f_text, f_tgt) -> dict[str, torch.Tensor]:
        dist = torch.cdist(f_com, f_tgt)
        valid = valid_negatives(batch.reference_ids, batch.target_ids)
        neg, has = sample_negatives(dist, valid, self.hard_ratio, self.hard_temperature)
        if bool(has.any()):
            trip = triplet_loss(f_com[has], f_tgt[has], f_tgt[neg][has])
        else:
            trip = f_com.sum() * 0.0
        zero = f_com.new_zeros(())
        parts = {"triplet": trip, "disc": zero, "cons": zero}
        if self.use_disc:
            parts["disc"] = adversarial_loss(self.discriminator(f_com), self.adversarial)
        if self.use_cons:
            parts["cons"] = consistency_loss(
                self.cons_text(f_com), f_text, self.cons_img(f_com), f_tgt,
                self.alpha_text, self.alpha_img,
            )
        return parts

    def training_loss(self, batch: TrainBatch) -> dict[str, torch.Tensor]:
        """The composer's weighted loss parts (Eq. 19), for inspection; training uses
        :meth:`training_step`."""
        parts = self._main_loss(batch, *self._forward_train(batch))
        return {k: w * parts[k] for k, w in zip(("triplet", "disc", "cons"), self.lambdas)}

    def training_step(self, batch, optimizers, step):
        """Composer step (Adam on lambda-weighted Eq. 19), then D step (SGD on Eq. 17 with
        detached embeddings)."""
        f_com, f_text, f_tgt = self._forward_train(batch)
        parts = self._main_loss(batch, f_com, f_text, f_tgt)
        weighted = {k: w * parts[k] for k, w in zip(("triplet", "disc", "cons"), self.lambdas)}
        total = sum(weighted.values())
        main_opt = optimizers[0]
        main_opt.zero_grad(set_to_none=True)
        if self.discriminator is not None:  # D takes no gradient from the composer's loss
            self.discriminator.requires_grad_(False)
        total.backward()
        if self.discriminator is not None:
            self.discriminator.requires_grad_(True)
        main_opt.step()
        out = {k: v.detach() for k, v in weighted.items()}
        out["d_loss"] = f_com.new_zeros(())
        if self.discriminator is not None:
            d_opt = optimizers[1]
            d_opt.zero_grad(set_to_none=True)
            d_loss = discriminator_loss(
                self.discriminator(f_tgt.detach()), self.discriminator(f_com.detach())
            )
            d_loss.backward()
            d_opt.step()
            out["d_loss"] = d_loss.detach()
        return out
