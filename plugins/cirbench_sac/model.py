"""The SAC composer (Jandial et al., WACV 2022), assembled from :mod:`cirbench_sac.modules`.

Query:  backbone levels V^l -> SFA (Eqs. 4-8) -> O^l -> SFM (Eqs. 10-13) -> f_agg;
        text (Eqs. 2-3) -> T^l, f_text; f_com = composition(f_agg, f_text) (Eq. 14).
Target: backbone levels V_t^l -> GeM -> O_t^l -> SFM target path -> f_tgt.
Losses (Eqs. 15-18): lambda_1 L_triplet + lambda_2 L_adv + lambda_3 L_cons for the composer
(Adam), L_D for the discriminator (its own SGD), in :meth:`SAC.training_step`.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from cirbench import Composer, ComposerContext, TrainBatch, build_image_backbone

from cirbench_sac.modules import (
    SFA,
    SFM,
    Composition,
    Discriminator,
    SentenceTextEncoder,
    adversarial_loss,
    consistency_loss,
    discriminator_loss,
    NegativeBank,
    sample_negatives,
    triplet_loss,
    valid_negatives,
)

LOSS_SETS = ("triplet", "triplet+cons", "triplet+disc", "triplet+disc+cons")
LEVEL_SETS = ("l1", "l2", "both")
CONS_TARGETS = ("live", "detached")


class SAC(Composer):
    """SAC. Every open detail is a keyword (defaults in the plugin README):

    Args:
        stages: the two backbone stages forming levels 1 and 2 (None: the protocol's
            ``feature_stages``; docs/papers.md §0 decision 7, backbones belong to the protocol).
        levels: ``both`` | ``l1`` | ``l2`` (Table 7).
        composition: ``offset`` | ``concat`` | ``gating`` | ``hadamard`` (Table 4).
        losses: ``triplet+disc+cons`` | ``triplet`` | ``triplet+cons`` | ``triplet+disc``
            (Table 6).
        word_dim, sent_dim: F_word and F_sent sizes (Eq. 2).
        text_embeddings: None (random word embeddings over the training vocabulary) or a
            local ``transformers`` model directory whose tokenizer and input embeddings
            (fine-tuned; ``word_dim`` then follows the model) replace them (SAC-BERT).
        qk_reduction: Q/K channels = C // qk_reduction (SAGAN's 8).
        temperatures: the semantic-pooling softmax temperatures (Eq. 6) of levels 1 and 2
            (paper: "T = 1, 8", read in the order of the levels).
        gem_p, gem_eps: GeM's initial p and clamp.
        common_dim: SFM projection size (None: embed_dim).
        target_head: also apply SFM's BN+Omega head to the target (Eq. 13 literally: no).
        cons_targets: ``live`` (Eq. 17 literally: gradients flow into f_text and f_tgt) or
            ``detached`` (stop-gradient on the consistency loss's targets).
        delta_init: initial scale of the composition's normalisation (Eq. 14).
        hard_ratio: probability that a row's negative is drawn distance-weighted (else uniform).
        hard_temperature: softmax(-dist / hard_temperature) for the distance weighting.
        bank_size: the negatives' candidates are the batch's targets plus a FIFO memory of
            the last ``bank_size`` training target embeddings (0: the batch only).
        disc_slope: LeakyReLU slope in D.
        adversarial: ``non_saturating`` (-log D(f_com)) | ``minimax`` (log(1 - D(f_com))).
        lambdas: weights of (triplet, adversarial, consistency) (Eq. 18).
        alpha_text, alpha_img: consistency weights (Eq. 17).
        lr, disc_lr: Adam lr of everything but D; SGD lr of D.
        freeze_backbone_fraction: with pretrained backbone weights, the backbone is frozen
            for the first ``round(fraction * protocol.iterations)`` steps (paper: 10 epochs).
        freeze_backbone: whether that warm-up applies (None: exactly when the protocol's
            backbone is pretrained; a random backbone has nothing to protect).
    """

    automatic_optimization = False

    def __init__(
        self,
        ctx: ComposerContext,
        *,
        stages: tuple[str, str] | None = None,
        levels: str = "both",
        composition: str = "offset",
        losses: str = "triplet+disc+cons",
        word_dim: int = 768,
        sent_dim: int = 1024,
        text_embeddings: str | None = None,
        qk_reduction: int = 8,
        temperatures: tuple[float, float] = (1.0, 8.0),
        gem_p: float = 3.0,
        gem_eps: float = 1e-6,
        common_dim: int | None = None,
        target_head: bool = False,
        cons_targets: str = "live",
        delta_init: float = 4.0,
        hard_ratio: float = 0.5,
        hard_temperature: float = 1.0,
        bank_size: int = 256,
        disc_slope: float = 0.2,
        adversarial: str = "non_saturating",
        lambdas: tuple[float, float, float] = (1.0, 0.6, 0.1),
        alpha_text: float = 1.0,
        alpha_img: float = 0.1,
        lr: float = 1e-3,
        disc_lr: float = 2e-4,
        freeze_backbone_fraction: float = 0.2,
        freeze_backbone: bool | None = None,
    ) -> None:
        super().__init__(ctx)
        if levels not in LEVEL_SETS:
            raise ValueError(f"sac: levels must be one of {LEVEL_SETS}, got {levels!r}")
        if losses not in LOSS_SETS:
            raise ValueError(f"sac: losses must be one of {LOSS_SETS}, got {losses!r}")
        if adversarial not in ("non_saturating", "minimax"):
            raise ValueError(f"sac: adversarial must be non_saturating or minimax, got {adversarial!r}")
        if cons_targets not in CONS_TARGETS:
            raise ValueError(f"sac: cons_targets must be one of {CONS_TARGETS}, got {cons_targets!r}")
        if len(tuple(temperatures)) != 2 or any(float(t) <= 0 for t in temperatures):
            raise ValueError(f"sac: temperatures must be two positive numbers, got {temperatures!r}")
        if stages is None:
            stages = tuple(ctx.protocol.feature_stages)
        d = ctx.protocol.embed_dim
        self.backbone = build_image_backbone(ctx.protocol)
        pick = {"both": slice(0, 2), "l1": slice(0, 1), "l2": slice(1, 2)}[levels]
        self.stages = tuple(stages)[pick]
        self.temperatures = tuple(float(t) for t in temperatures)[pick]
        dims = [self.backbone.stage_dims[s] for s in self.stages]
        # Stages deeper than the last level are never used (e.g. layer4 under quick's
        # layer2+layer3): drop them, so that no parameter is held that gets no gradient.
        self.backbone.truncate_after(max(self.stages, key=lambda s: int(s[-1])))
        self.levels, self.losses, self.adversarial = levels, losses, adversarial
        self.text = SentenceTextEncoder(ctx.train_texts, dims, d, word_dim, sent_dim, text_embeddings)
        self.sfa = nn.ModuleList(
            [SFA(c, qk_reduction, t, gem_p, gem_eps) for c, t in zip(dims, self.temperatures)]
        )
        self.sfm = SFM(dims, common_dim or d, d, target_head)
        self.composition = Composition(d, composition, delta_init)
        self.use_disc = "disc" in losses
        self.use_cons = "cons" in losses
        self.discriminator = Discriminator(d, disc_slope) if self.use_disc else None
        if self.use_cons:
            self.cons_text = nn.Linear(d, d)  # Omega^c_text
            self.cons_img = nn.Linear(d, d)  # Omega^c_img
        self.cons_targets = cons_targets
        self.hard_ratio, self.hard_temperature = float(hard_ratio), float(hard_temperature)
        self.bank = NegativeBank(bank_size, d)
        self.lambdas = tuple(float(x) for x in lambdas)
        self.alpha_text, self.alpha_img = float(alpha_text), float(alpha_img)
        self.lr, self.disc_lr = float(lr), float(disc_lr)
        if freeze_backbone is None:
            freeze_backbone = bool(ctx.protocol.pretrained)
        self.freeze_steps = (
            round(freeze_backbone_fraction * ctx.protocol.iterations) if freeze_backbone else 0
        )
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
        """Eq. 6's semantic attention ``M`` per level: ``{stage: [B, H, W]}`` (Fig. 4).

        See docs/papers.md §4."""
        _, _, attn = self._query(self._maps(images), texts)
        return dict(zip(self.stages, attn))

    # --- training ----------------------------------------------------------------------------

    def main_parameters(self) -> list[nn.Parameter]:
        """Everything but D, frozen backbone included (Adam skips params without grad)."""
        disc = {id(p) for p in self.discriminator.parameters()} if self.discriminator else set()
        return [p for p in self.parameters() if id(p) not in disc]

    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        """See docs/papers.md §4."""
        opts: list[torch.optim.Optimizer] = [
            torch.optim.Adam(self.main_parameters(), lr=self.lr, weight_decay=self.ctx.protocol.weight_decay)
        ]
        if self.discriminator is not None:
            opts.append(torch.optim.SGD(self.discriminator.parameters(), lr=self.disc_lr))
        return opts

    def on_train_step_start(self, step: int) -> None:
        """Backbone frozen for the first ``freeze_steps`` steps (paper: 10 epochs; 0 steps
        unless the backbone is pretrained).

        See docs/papers.md §4."""
        self.backbone.requires_grad_(step >= self.freeze_steps)

    def _forward_train(self, batch: TrainBatch):
        b = len(batch)
        maps = self._maps(torch.cat([batch.reference_images, batch.target_images]))  # one pass
        f_com, f_text, _ = self._query([m[:b] for m in maps], batch.texts)
        f_tgt = self._target([m[b:] for m in maps])
        return f_com, f_text, f_tgt

    def _main_loss(self, batch: TrainBatch, f_com, f_text, f_tgt) -> dict[str, torch.Tensor]:
        # Eq. 15's candidates: this batch's targets (with gradient) + the bank (detached).
        bank_emb, bank_ids = self.bank.candidates()
        cand = torch.cat([f_tgt, bank_emb.to(f_tgt.dtype)])
        cand_ids = torch.cat([batch.target_ids, bank_ids.to(batch.target_ids.device)])
        dist = torch.cdist(f_com.detach(), cand.detach())
        valid = valid_negatives(batch.reference_ids, batch.target_ids, cand_ids)
        neg, has = sample_negatives(dist, valid, self.hard_ratio, self.hard_temperature)
        if bool(has.any()):
            trip = triplet_loss(f_com[has], f_tgt[has], cand[neg][has])
        else:
            trip = f_com.sum() * 0.0
        zero = f_com.new_zeros(())
        parts = {"triplet": trip, "disc": zero, "cons": zero}
        if self.use_disc:
            parts["disc"] = adversarial_loss(self.discriminator(f_com), self.adversarial)
        if self.use_cons:
            detach = self.cons_targets == "detached"
            parts["cons"] = consistency_loss(
                self.cons_text(f_com), f_text.detach() if detach else f_text,
                self.cons_img(f_com), f_tgt.detach() if detach else f_tgt,
                self.alpha_text, self.alpha_img,
            )
        return parts

    def training_loss(self, batch: TrainBatch) -> dict[str, torch.Tensor]:
        """The composer's weighted loss parts (Eq. 18), for inspection; training uses
        :meth:`training_step` (this does not update the negatives' bank)."""
        parts = self._main_loss(batch, *self._forward_train(batch))
        return {k: w * parts[k] for k, w in zip(("triplet", "disc", "cons"), self.lambdas)}

    def training_step(self, batch, optimizers, step):
        """Composer step (Adam on lambda-weighted Eq. 18), then D step (SGD on Eq. 16 with
        detached embeddings); the batch's targets then enter the negatives' bank.

        See docs/papers.md §4, Eq. 18."""
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
        self.bank.push(f_tgt.detach(), batch.target_ids)
        return out
