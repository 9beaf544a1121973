"""SAC's building blocks, each named after the equation of Jandial et al. (WACV 2022) it
implements. SAC has no public code: every detail the paper leaves open is a constructor keyword
(docs/papers.md §0 decision 6, §6 item 10); the plugin README lists each with its default.

* :class:`SentenceTextEncoder` (Eqs. 2-3): word embeddings -> GRU -> F_sent;
  ``T^l = Omega_l(F_sent)`` (one linear per level, to C^l) and ``f_text = Omega_g(F_sent)``.
* :class:`GeM` (used in Eq. 8): generalised-mean pooling, learnable p.
* :class:`SFA` (Eqs. 4-8): self-attention + text-guided semantic pooling on one level.
* :class:`SFM` (Eqs. 10-14): level projections, LSTM over the levels, head.
* :class:`Discriminator` (Eq. 16): 3 FC layers d -> d/2 -> d/4 -> 1.
* :func:`residual_offset` (Eq. 14) and the ablation compositions of Table 4.
* :func:`triplet_loss`, :func:`negative_weights`, :func:`sample_negatives`,
  :class:`NegativeBank` (Eq. 15), :func:`discriminator_loss`, :func:`adversarial_loss`
  (Eq. 16), :func:`consistency_loss` (Eq. 17); their weighted sum is Eq. 18.

Equation numbers are the paper's: SFA is Eqs. 4-8 (4: self-attention A_self, E, V_bar;
5: A_sal; 6: M; 7: S; 8: O_q and O_t), the discriminator loss Eq. 16, the consistency loss
Eq. 17, the total Eq. 18 (an earlier version of this plugin numbered them 4-9 and 17-19).
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from cirbench import Vocabulary


class SentenceTextEncoder(nn.Module):
    """Eqs. 2-3: ``F_word = Embedding(words)`` (dim ``word_dim``, random init), ``F_sent`` = the
    GRU's (hidden ``sent_dim``) output at the last real token; ``T^l = Omega_l(F_sent)`` for
    each level width in ``level_dims``, ``f_text = Omega_g(F_sent)`` of size ``out_dim``.

    See docs/papers.md §4, Eq. 3."""

    def __init__(
        self,
        texts: Sequence[str],
        level_dims: Sequence[int],
        out_dim: int,
        word_dim: int = 768,
        sent_dim: int = 1024,
        pretrained_dir: str | None = None,
    ) -> None:
        super().__init__()
        self.tokenizer = None
        if pretrained_dir is None:
            self.vocab = Vocabulary(texts)
            self.embedding = nn.Embedding(len(self.vocab), word_dim)
        else:  # SAC-BERT: a BERT-family model's (non-contextual) input embeddings, fine-tuned
            self.tokenizer, weight = load_input_embeddings(pretrained_dir)
            self.embedding = nn.Embedding.from_pretrained(weight, freeze=False)
            word_dim = weight.shape[1]
        self.gru = nn.GRU(word_dim, sent_dim, batch_first=True)
        self.level_proj = nn.ModuleList([nn.Linear(sent_dim, c) for c in level_dims])  # Eq. 3
        self.global_proj = nn.Linear(sent_dim, out_dim)  # Omega_g

    def sentence(self, texts: Sequence[str]) -> torch.Tensor:
        """F_sent ``[B, sent_dim]`` (Eq. 2).

        See docs/papers.md §4, Eq. 2."""
        device = self.embedding.weight.device
        if self.tokenizer is None:
            ids, lengths = self.vocab.encode(texts)
        else:
            enc = self.tokenizer([str(t) for t in texts], padding=True, truncation=True, return_tensors="pt")
            ids, lengths = enc["input_ids"], enc["attention_mask"].sum(1)
        ids, lengths = ids.to(device), lengths.to(device)
        out, _ = self.gru(self.embedding(ids))
        return out[torch.arange(len(texts), device=device), lengths - 1]

    def forward(self, texts: Sequence[str]) -> tuple[list[torch.Tensor], torch.Tensor]:
        """``([T^1, T^2, ...], f_text)``."""
        s = self.sentence(texts)
        return [p(s) for p in self.level_proj], self.global_proj(s)


def load_input_embeddings(model_dir: str):
    """``(tokenizer, input-embedding weight [V, h])`` of the ``transformers`` model in the local
    directory ``model_dir`` (never downloads). The model itself is not kept."""
    import os

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)
    model = AutoModel.from_pretrained(str(model_dir), local_files_only=True)
    weight = model.get_input_embeddings().weight.detach().float().clone()
    del model
    return tokenizer, weight


class GeM(nn.Module):
    """Generalised-mean pooling (Radenović et al.): ``(mean_{hw} clamp(x, eps)^p)^(1/p)``,
    learnable ``p`` (init ``p``).

    See docs/papers.md §4, Eq. 8."""

    def __init__(self, p: float = 3.0, eps: float = 1e-6) -> None:
        super().__init__()
        self.p = nn.Parameter(torch.tensor(float(p)))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.clamp(min=self.eps).pow(self.p).mean(dim=(2, 3)).pow(1.0 / self.p)


class SFA(nn.Module):
    """Eqs. 4-8 on one level ``V [B, C, H, W]`` with its text vector ``T [B, C]``:

    * Eq. 4: ``Q = Theta_q(V)``, ``K = Theta_k(V)`` (1x1 convs to ``C // qk_reduction``,
      SAGAN), ``V' = Theta_v(V)`` (1x1, C); ``A_self = softmax_row(Q^T K)`` ``[N, N]``;
      ``E = V' A_self^T``; ``V_bar = beta * E + V`` (beta learnable, init 0).
    * Eq. 5: ``A_sal(h, w) = <V_bar(:, h, w), T>``.
    * Eq. 6: ``M = softmax_{hw}(A_sal / temperature)`` (the level's temperature).
    * Eq. 7: ``S = sum_{hw} M V_bar``.
    * Eq. 8: ``O_q = GeM(V_bar) + gamma * S`` (gamma learnable, init 0);
      target: ``O_t = GeM(V_t)`` (:meth:`target`).

    On a 1x1 map M is 1 whatever the text: the level's attention is inert (the protocol's
    ``feature_stages`` must give maps of at least 2x2).
    """

    def __init__(
        self,
        channels: int,
        qk_reduction: int = 8,
        temperature: float = 1.0,
        gem_p: float = 3.0,
        gem_eps: float = 1e-6,
        beta_init: float = 0.0,
        gamma_init: float = 0.0,
    ) -> None:
        super().__init__()
        qk = max(1, channels // qk_reduction)
        self.theta_q = nn.Conv2d(channels, qk, 1)
        self.theta_k = nn.Conv2d(channels, qk, 1)
        self.theta_v = nn.Conv2d(channels, channels, 1)
        self.beta = nn.Parameter(torch.tensor(float(beta_init)))
        self.gamma = nn.Parameter(torch.tensor(float(gamma_init)))
        self.temperature = float(temperature)
        self.gem = GeM(gem_p, gem_eps)

    def self_attention(self, v: torch.Tensor) -> torch.Tensor:
        """Eq. 4: ``V_bar [B, C, H, W]``.

        See docs/papers.md §4, Eq. 4."""
        b, c, h, w = v.shape
        q = self.theta_q(v).flatten(2)  # [B, C', N]
        k = self.theta_k(v).flatten(2)
        vv = self.theta_v(v).flatten(2)  # [B, C, N]
        a = torch.softmax(q.transpose(1, 2) @ k, dim=-1)  # [B, N, N]
        e = vv @ a.transpose(1, 2)  # [B, C, N]
        return self.beta * e.view(b, c, h, w) + v

    def attention(self, v_bar: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Eqs. 5-6: the semantic attention map ``M [B, H, W]`` (sums to 1 over H*W).

        See docs/papers.md §4, Eq. 5 and Eq. 6."""
        b, _, h, w = v_bar.shape
        sal = torch.einsum("bchw,bc->bhw", v_bar, t).flatten(1)
        return torch.softmax(sal / self.temperature, dim=1).view(b, h, w)

    def forward(self, v: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(O_q [B, C], M [B, H, W])``.

        See docs/papers.md §4, Eq. 7 and Eq. 8."""
        v_bar = self.self_attention(v)
        m = self.attention(v_bar, t)
        s = torch.einsum("bchw,bhw->bc", v_bar, m)  # Eq. 7
        return self.gem(v_bar) + self.gamma * s, m  # Eq. 8

    def target(self, v: torch.Tensor) -> torch.Tensor:
        """Eq. 8, target side: ``O_t = GeM(V_t)`` on the raw map (no attention, no text).

        See docs/papers.md §4, Eq. 8."""
        return self.gem(v)


class SFM(nn.Module):
    """Eqs. 10-13: ``G^l = BN(Omega^l(O^l))`` (to ``common_dim``), ``H`` = last hidden state of
    an LSTM (hidden ``out_dim``) over the sequence ``[G^1, G^2]``; query head
    ``f_agg = Omega(BN(H))``. Target: ``f_tgt = H_t`` (the same projections and LSTM), plus the
    same BN+Omega head only with ``target_head=True`` (the paper writes none)."""

    def __init__(
        self, level_dims: Sequence[int], common_dim: int, out_dim: int, target_head: bool = False
    ) -> None:
        super().__init__()
        self.proj = nn.ModuleList(
            [nn.Sequential(nn.Linear(c, common_dim), nn.BatchNorm1d(common_dim)) for c in level_dims]
        )
        self.lstm = nn.LSTM(common_dim, out_dim, batch_first=True)
        self.head = nn.Sequential(nn.BatchNorm1d(out_dim), nn.Linear(out_dim, out_dim))
        self.target_head = bool(target_head)

    def aggregate(self, pooled: Sequence[torch.Tensor]) -> torch.Tensor:
        """Eqs. 10-12: ``H`` ``[B, out_dim]``, the LSTM's last hidden state over the levels.

        See docs/papers.md §4, Eqs. 10–12."""
        g = torch.stack([p(o) for p, o in zip(self.proj, pooled)], dim=1)  # [B, L, common]
        _, (h, _) = self.lstm(g)
        return h[-1]

    def forward(self, pooled: Sequence[torch.Tensor]) -> torch.Tensor:
        """Eq. 13: ``f_agg = Omega(BN(H))``.

        See docs/papers.md §4, Eq. 13."""
        return self.head(self.aggregate(pooled))

    def target(self, pooled: Sequence[torch.Tensor]) -> torch.Tensor:
        """See docs/papers.md §4, Eq. 13."""
        h = self.aggregate(pooled)
        return self.head(h) if self.target_head else h


class Discriminator(nn.Module):
    """Eq. 16's D: 3 FC layers ``d -> d/2 -> d/4 -> 1`` with LeakyReLU(``slope``); returns
    logits (D = sigmoid of them).

    See docs/papers.md §4, Eq. 16."""

    def __init__(self, dim: int, slope: float = 0.2) -> None:
        super().__init__()
        h1, h2 = max(1, dim // 2), max(1, dim // 4)
        self.net = nn.Sequential(
            nn.Linear(dim, h1), nn.LeakyReLU(slope),
            nn.Linear(h1, h2), nn.LeakyReLU(slope),
            nn.Linear(h2, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(-1)


# --- Composition (Eq. 14 and Table 4's alternatives) ------------------------------------------

COMPOSITIONS = ("offset", "concat", "gating", "hadamard")


def residual_offset(f_agg: torch.Tensor, f_text: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    """Eq. 14: ``f_com = delta * (f_agg + f_text) / ||f_agg + f_text||_2``.

    See docs/papers.md §4, Eq. 14."""
    return delta * F.normalize(f_agg + f_text, dim=-1)


class Composition(nn.Module):
    """Table 4's composition operators; every one ends in SAC's ``delta``-scaled L2
    normalisation so that only the operator differs:

    * ``offset`` (SAC, Eq. 14): ``f_agg + f_text``.
    * ``concat``: ``Linear_{2d->d}(ReLU(Linear_{2d->2d}([f_agg, f_text])))``.
    * ``gating`` (TIRG's residual gating): ``sigmoid(Linear_{2d->d}([.,.])) * f_agg +
      Linear_{2d->d}(ReLU(Linear_{2d->2d}([.,.])))``.
    * ``hadamard``: ``f_agg * f_text``.

    See docs/papers.md §4, Eq. 14.
    """

    def __init__(self, dim: int, kind: str = "offset", delta_init: float = 4.0) -> None:
        super().__init__()
        if kind not in COMPOSITIONS:
            raise ValueError(f"sac: composition must be one of {COMPOSITIONS}, got {kind!r}")
        self.kind = kind
        self.delta = nn.Parameter(torch.tensor(float(delta_init)))
        if kind in ("concat", "gating"):
            self.mlp = nn.Sequential(nn.Linear(2 * dim, 2 * dim), nn.ReLU(), nn.Linear(2 * dim, dim))
        if kind == "gating":
            self.gate = nn.Linear(2 * dim, dim)

    def forward(self, f_agg: torch.Tensor, f_text: torch.Tensor) -> torch.Tensor:
        if self.kind == "offset":
            return residual_offset(f_agg, f_text, self.delta)
        if self.kind == "hadamard":
            z = f_agg * f_text
        else:
            cat = torch.cat([f_agg, f_text], dim=-1)
            z = self.mlp(cat)
            if self.kind == "gating":
                z = torch.sigmoid(self.gate(cat)) * f_agg + z
        return self.delta * F.normalize(z, dim=-1)


# --- Losses (Eqs. 15-18) ----------------------------------------------------------------------


def valid_negatives(
    reference_ids: torch.Tensor, target_ids: torch.Tensor, candidate_ids: torch.Tensor | None = None
) -> torch.Tensor:
    """``[B, K]`` bool: candidate ``j`` (image id ``candidate_ids[j]``; default: the batch's
    targets, ``K = B``) may be a negative of query ``i`` (I_n not in {I_q, I_t}: its id
    differs from row ``i``'s target id and from its reference id).

    See docs/papers.md §4, Eq. 15."""
    c = target_ids if candidate_ids is None else candidate_ids
    return (c[None, :] != target_ids[:, None]) & (c[None, :] != reference_ids[:, None])


def negative_weights(dist: torch.Tensor, valid: torch.Tensor, hard_temperature: float = 1.0) -> torch.Tensor:
    """The distance weighting of Eq. 15's hard draws: ``P(j | i) = exp(-dist_ij / tau) /
    sum_{k valid} exp(-dist_ik / tau)`` over the valid candidates ``j`` of row ``i``
    (closer is likelier), 0 for invalid ones; a row without a valid candidate is all 0.
    ``dist``, ``valid``: ``[B, K]``. Returns ``[B, K]``."""
    d = dist.detach()
    logits = (-d / hard_temperature).masked_fill(~valid, float("-inf"))
    has = valid.any(dim=1, keepdim=True)
    w = torch.softmax(torch.where(has, logits, torch.zeros_like(logits)), dim=1)
    return torch.where(has, w, torch.zeros_like(w))


def sample_negatives(
    dist: torch.Tensor,
    valid: torch.Tensor,
    hard_ratio: float = 0.5,
    hard_temperature: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. 15's negative selection over ``K`` candidates (the batch's targets and, in the
    composer, a :class:`NegativeBank` of recent ones): per query row, a *hard* draw with
    probability ``hard_ratio`` (:func:`negative_weights`), else a uniform random valid one
    ("random selection interleaved with distance-weighted sampling"). ``dist``, ``valid``:
    ``[B, K]``. Uses torch's global RNG (seeded by the engine). Returns ``(neg [B] column
    indices, has_neg [B] bool)``.

    See docs/papers.md §4, Eq. 15."""
    has = valid.any(dim=1)
    hard = negative_weights(dist, valid, hard_temperature)
    uniform = valid.float() / valid.sum(dim=1, keepdim=True).clamp(min=1)
    use_hard = torch.rand(dist.shape[0], device=dist.device) < hard_ratio
    probs = torch.where(use_hard[:, None], hard, uniform)
    probs = torch.where(has[:, None], probs, torch.ones_like(probs))  # rows w/o negatives
    neg = torch.multinomial(probs, 1).squeeze(1)
    return neg, has


class NegativeBank(nn.Module):
    """A FIFO memory of the last ``size`` target embeddings seen in training (detached) with
    their image ids: Eq. 15's candidates "over the training set" approximated by the recent
    part of it. Buffers (saved with the model, so a resumed run continues exactly):
    ``embeddings [size, d]``, ``ids [size]`` (-1 = empty slot), ``pointer``."""

    def __init__(self, size: int, dim: int) -> None:
        super().__init__()
        self.size = int(size)
        self.register_buffer("embeddings", torch.zeros(self.size, dim))
        self.register_buffer("ids", torch.full((self.size,), -1, dtype=torch.long))
        self.register_buffer("pointer", torch.zeros((), dtype=torch.long))

    def candidates(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(embeddings [k, d], ids [k])`` of the filled slots."""
        filled = self.ids >= 0
        return self.embeddings[filled], self.ids[filled]

    @torch.no_grad()
    def push(self, embeddings: torch.Tensor, ids: torch.Tensor) -> None:
        """Store ``embeddings [n, d]`` (detached) with their ``ids [n]``, overwriting the
        oldest slots."""
        if self.size == 0:
            return
        n = min(int(embeddings.shape[0]), self.size)
        embeddings, ids = embeddings[-n:], ids[-n:]
        slots = (int(self.pointer) + torch.arange(n, device=self.ids.device)) % self.size
        self.embeddings[slots] = embeddings.detach().to(self.embeddings.dtype)
        self.ids[slots] = ids.to(self.ids.device)
        self.pointer.fill_((int(self.pointer) + n) % self.size)


def triplet_loss(f_com: torch.Tensor, f_pos: torch.Tensor, f_neg: torch.Tensor) -> torch.Tensor:
    """Eq. 15: ``mean log(1 + exp(||f_com - f+||_2 - ||f_com - f-||_2))`` (softplus form).

    See docs/papers.md §4, Eq. 15."""
    return F.softplus((f_com - f_pos).norm(dim=-1) - (f_com - f_neg).norm(dim=-1)).mean()


def discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """Eq. 16: ``L_D = -E[log D(f_tgt)] - E[log(1 - D(f_com))]`` with ``D = sigmoid(logits)``
    (BCE with logits).

    See docs/papers.md §4, Eq. 16."""
    return F.binary_cross_entropy_with_logits(
        real_logits, torch.ones_like(real_logits)
    ) + F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits))


def adversarial_loss(fake_logits: torch.Tensor, form: str = "non_saturating") -> torch.Tensor:
    """The composer's part of Eq. 16: ``non_saturating``: ``-E[log D(f_com)]``;
    ``minimax``: ``E[log(1 - D(f_com))]`` (what the composer minimises in the minimax game).

    See docs/papers.md §4, Eq. 16."""
    if form == "non_saturating":
        return F.softplus(-fake_logits).mean()
    if form == "minimax":
        return -F.softplus(fake_logits).mean()
    raise ValueError(f"sac: adversarial form must be non_saturating or minimax, got {form!r}")


def consistency_loss(
    text_back: torch.Tensor,
    f_text: torch.Tensor,
    img_back: torch.Tensor,
    f_tgt: torch.Tensor,
    alpha_text: float = 1.0,
    alpha_img: float = 0.1,
) -> torch.Tensor:
    """Eq. 17: ``alpha_t ||Omega^c_text(f_com) - f_text||_2 + alpha_i ||Omega^c_img(f_com) -
    f_tgt||_2`` (per-sample L2 norms, averaged over the batch). The targets ``f_text`` and
    ``f_tgt`` are used as given: pass them detached for the stop-gradient reading (the
    composer's ``cons_targets="detached"``), live for the literal one.

    See docs/papers.md §4, Eq. 17."""
    return (
        alpha_text * (text_back - f_text).norm(dim=-1).mean()
        + alpha_img * (img_back - f_tgt).norm(dim=-1).mean()
    )
