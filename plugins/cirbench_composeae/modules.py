"""ComposeAE's composition network (docs/papers.md §3; ecom-research/ComposeAE
``img_text_composition_models.py``: ``ComplexProjectionModule``, ``LinearMapping``,
``ConvMapping``, ``ComposeAE.compose_img_text_features``, ``decoder``, ``txtdecoder``).

Notation: ``z`` = image feature ``[B, d]`` (``d`` = the protocol's ``embed_dim``), ``q`` = text
feature ``[B, t]`` (``t`` = the text encoder's width: 384 for MiniLM, 768 for BERT-base, ``d``
for the LSTM), ``c`` = +1 (normal) or -1 (conjugate rotation)::

    eta(z)   = Linear_{d->d}(ReLU(Dropout_0.5(Linear_{d->d}(BN_d(z)))))       image projection
    delta    = gamma(q) = Linear_{d->d}(ReLU(Linear_{t->d}(BN_t(q))))          text -> angles
    exp(j delta) = cos(delta) + j c sin(delta)                                rotation
    Re = eta(z) cos(delta),  Im = c eta(z) sin(delta)                         eta(z) exp(j delta)
    phi      = [Re, Im]                                                       [B, 2d]
    rho(phi) = Linear_{d->d}(ReLU(Linear_{2d->d}(ReLU(BN_2d(phi)))))          LinearMapping
    rho_conv = same MLP on flatten(MaxPool_{2d/64}(Conv1d_{5->64,k3,p1}(
                   stack[eta(z), delta, z, Re, Im])))                         ConvMapping
    v        = a rho(phi) + b rho_conv,   a = 10, b = 1 at init (learnable)   composition
    z_hat    = Linear_{d->d}(ReLU(Linear_{d->d}(ReLU(BN_d(v)))))              image decoder
    q_hat    = Linear_{t->t}(ReLU(Linear_{d->t}(ReLU(BN_d(v)))))              text decoder

As in the code, each branch has its own projection module (two independent ``eta`` / ``gamma``
instances: ``proj_linear`` feeds ``rho``, ``proj_conv`` feeds ``rho_conv``). The code's
``a = [1, 10, 1, 1]`` uses ``a[1]`` = 10 on ``rho`` and ``a[0]`` = 1 on ``rho_conv``; here they
are the two scalars ``a`` and ``b`` (the unused ``a[2:]`` are not created).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

#: ConvMapping: output channels of the Conv1d over the 5 stacked vectors (code: 64).
CONV_CHANNELS = 64


def rotation(delta: torch.Tensor, conjugate: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """``exp(j c delta)`` as ``(real, imaginary) = (cos delta, c sin delta)``, ``c = -1`` when
    ``conjugate`` (code: ``re_delta``, ``im_delta = CONJUGATE * sin(delta)``).

    See docs/papers.md §3, E3.3."""
    sign = -1.0 if conjugate else 1.0
    return torch.cos(delta), sign * torch.sin(delta)


def rotate(x: torch.Tensor, delta: torch.Tensor, conjugate: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """The real vector ``x`` rotated by ``exp(j c delta)``: ``(Re, Im) = (x cos delta,
    c x sin delta)`` (code: ``re_score``, ``im_score``).

    See docs/papers.md §3, E3.3."""
    re, im = rotation(delta, conjugate)
    return x * re, x * im


class ImageProjection(nn.Sequential):
    """``eta``: BN(d) -> Linear(d, d) -> Dropout(0.5) -> ReLU -> Linear(d, d)
    (code: ``ComplexProjectionModule.image_features``).

    See docs/papers.md §3, E3.1."""

    def __init__(self, dim: int, dropout: float = 0.5) -> None:
        super().__init__(
            nn.BatchNorm1d(dim),
            nn.Linear(dim, dim),
            nn.Dropout(p=dropout),
            nn.ReLU(),
            nn.Linear(dim, dim),
        )


class TextProjection(nn.Sequential):
    """``gamma``: BN(t) -> Linear(t, d) -> ReLU -> Linear(d, d); its output ``delta`` is used
    as angles (code: ``ComplexProjectionModule.bert_features``; the paper's notes describe it
    without the ReLU, the code has it).

    See docs/papers.md §3, E3.2."""

    def __init__(self, text_dim: int, dim: int) -> None:
        super().__init__(
            nn.BatchNorm1d(text_dim),
            nn.Linear(text_dim, dim),
            nn.ReLU(),
            nn.Linear(dim, dim),
        )


class Projected(NamedTuple):
    """What :class:`ComplexProjection` gives: ``eta(z)``, ``delta = gamma(q)`` and the rotated
    ``Re``, ``Im`` (each ``[B, d]``); ``phi = [Re, Im]``."""

    eta: torch.Tensor
    delta: torch.Tensor
    re: torch.Tensor
    im: torch.Tensor

    @property
    def phi(self) -> torch.Tensor:
        return torch.cat([self.re, self.im], dim=1)


class ComplexProjection(nn.Module):
    """The complex projection (code: ``ComplexProjectionModule``): ``Re + j Im = eta(z) *
    exp(j c gamma(q))``, i.e. ``Re = eta(z) cos(delta)``, ``Im = c eta(z) sin(delta)``.

    See docs/papers.md §3, E3.3."""

    def __init__(self, dim: int, text_dim: int) -> None:
        super().__init__()
        self.eta = ImageProjection(dim)
        self.gamma = TextProjection(text_dim, dim)

    def forward(self, z: torch.Tensor, q: torch.Tensor, conjugate: bool = False) -> Projected:
        eta = self.eta(z)
        delta = self.gamma(q)
        re, im = rotate(eta, delta, conjugate)
        return Projected(eta, delta, re, im)


def _mapping(in_dim: int, dim: int) -> nn.Sequential:
    """BN(in) -> ReLU -> Linear(in, d) -> ReLU -> Linear(d, d) (code: ``.mapping`` of both
    ``LinearMapping`` and ``ConvMapping``)."""
    return nn.Sequential(
        nn.BatchNorm1d(in_dim),
        nn.ReLU(),
        nn.Linear(in_dim, dim),
        nn.ReLU(),
        nn.Linear(dim, dim),
    )


class LinearMapping(nn.Module):
    """``rho(phi) = Linear(d, d)(ReLU(Linear(2d, d)(ReLU(BN(2d)(phi)))))`` on ``phi = [Re, Im]``
    (code: ``LinearMapping``).

    See docs/papers.md §3, E3.4."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.mapping = _mapping(2 * dim, dim)

    def forward(self, phi: torch.Tensor) -> torch.Tensor:
        return self.mapping(phi)


class ConvMapping(nn.Module):
    """``rho_conv`` (code: ``ConvMapping``): the 5 vectors ``[eta(z), delta, z, Re, Im]``
    stacked as channels ``[B, 5, d]`` -> Conv1d(5 -> 64, k=3, pad=1) -> AdaptiveMaxPool1d(P)
    -> flatten ``[B, 64 P]`` -> BN -> ReLU -> Linear(64 P, d) -> ReLU -> Linear(d, d).

    ``P = 2d // 64`` (code: 16 for d = 512, so ``64 P = 2d = 1024``); ``P = 1`` when
    ``d < 32``. ``64 P = 2d`` whenever ``d`` is a multiple of 32.

    See docs/papers.md §3, E3.5.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.pool_size = max(1, 2 * dim // CONV_CHANNELS)
        self.conv = nn.Conv1d(5, CONV_CHANNELS, kernel_size=3, padding=1)
        self.pool = nn.AdaptiveMaxPool1d(self.pool_size)
        self.mapping = _mapping(CONV_CHANNELS * self.pool_size, dim)

    @staticmethod
    def stack(p: Projected, z: torch.Tensor) -> torch.Tensor:
        """``[eta(z), delta, z, Re, Im]`` as channels: ``[B, 5, d]`` (code: ``x[1:]``)."""
        return torch.stack([p.eta, p.delta, z, p.re, p.im], dim=1)

    def forward(self, p: Projected, z: torch.Tensor) -> torch.Tensor:
        pooled = self.pool(self.conv(self.stack(p, z)))
        return self.mapping(pooled.flatten(1))


class ComposeAEComposition(nn.Module):
    """``v = a rho(phi) + b rho_conv(eta, delta, z, Re, Im)`` (code:
    ``compose_img_text_features``: ``theta_linear * a[1] + theta_conv * a[0]``), each branch
    with its own :class:`ComplexProjection`; ``a`` init 10, ``b`` init 1, both learnable.
    ``conjugate=True`` rotates by ``exp(-j delta)`` in both branches (the symmetry loss).

    See docs/papers.md §3, E3.6."""

    def __init__(self, dim: int, text_dim: int, a: float = 10.0, b: float = 1.0) -> None:
        super().__init__()
        self.dim = dim
        self.text_dim = text_dim
        self.proj_linear = ComplexProjection(dim, text_dim)
        self.rho = LinearMapping(dim)
        self.proj_conv = ComplexProjection(dim, text_dim)
        self.rho_conv = ConvMapping(dim)
        self.a = nn.Parameter(torch.tensor(float(a)))
        self.b = nn.Parameter(torch.tensor(float(b)))

    def branches(
        self, z: torch.Tensor, q: torch.Tensor, conjugate: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(rho(phi), rho_conv(...))`` before the ``a``, ``b`` weights."""
        linear = self.rho(self.proj_linear(z, q, conjugate=conjugate).phi)
        conv = self.rho_conv(self.proj_conv(z, q, conjugate=conjugate), z)
        return linear, conv

    def forward(self, z: torch.Tensor, q: torch.Tensor, conjugate: bool = False) -> torch.Tensor:
        linear, conv = self.branches(z, q, conjugate)
        return self.a * linear + self.b * conv


class ImageDecoder(nn.Sequential):
    """``z_hat = Linear(d, d)(ReLU(Linear(d, d)(ReLU(BN(d)(v)))))`` (code: ``decoder``), the
    reconstruction of the reference image's feature for ``L_RI``.

    See docs/papers.md §3, E3.7."""

    def __init__(self, dim: int) -> None:
        super().__init__(
            nn.BatchNorm1d(dim),
            nn.ReLU(),
            nn.Linear(dim, dim),
            nn.ReLU(),
            nn.Linear(dim, dim),
        )


class TextDecoder(nn.Sequential):
    """``q_hat = Linear(t, t)(ReLU(Linear(d, t)(ReLU(BN(d)(v)))))`` (code: ``txtdecoder``), the
    reconstruction of the text feature for ``L_RT``.

    See docs/papers.md §3, E3.8."""

    def __init__(self, dim: int, text_dim: int) -> None:
        super().__init__(
            nn.BatchNorm1d(dim),
            nn.ReLU(),
            nn.Linear(dim, text_dim),
            nn.ReLU(),
            nn.Linear(text_dim, text_dim),
        )
