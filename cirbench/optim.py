"""Optimiser recipes: the protocol's default optimiser and TIRG's parameter groups.

* :func:`protocol_optimizer`: the optimiser a protocol names (``optimizer``, ``lr``,
  ``momentum``, ``weight_decay``), the default of :meth:`cirbench.Composer.configure_optimizers`
  for every composer that brings no recipe of its own.
* :func:`image_encoder_param_groups`: **TIRG's** recipe of parameter groups (``main.py``; also
  ComposeAE's, and TIRG's code gives it to its baselines): with ImageNet weights the ResNet
  trunk learns at ``backbone_lr_mult`` times the rate of the rest. Used by the ``tirg``,
  ``composeae`` and ``baselines`` plugins; it is a paper's recipe, not a default.

A composer with another recipe (SAC's Adam with its own rates, an adversarial step) writes it
in its own ``configure_optimizers``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterable

import torch
from torch import nn

if TYPE_CHECKING:
    from cirbench.encoders.image import ImageEncoder
    from cirbench.protocol import Protocol


def protocol_optimizer(params: Iterable[nn.Parameter] | Iterable[dict], protocol: "Protocol") -> torch.optim.Optimizer:
    """The optimiser ``protocol`` names, over ``params`` (tensors or parameter-group dicts):

    * ``sgd``: ``SGD(lr, momentum, weight_decay)``;
    * ``adam``: ``Adam(lr, betas=(momentum, 0.999), weight_decay)`` (L2 added to the gradient);
    * ``adamw``: ``AdamW(lr, betas=(momentum, 0.999), weight_decay)`` (decoupled decay).

    ``lr``, ``momentum`` and ``weight_decay`` are the protocol's fields; a group dict may set
    its own ``lr``. Raises ValueError for an optimiser name it does not know (the protocol
    refuses those when it is made) or no parameters. The defaults (``sgd``, 0.01, 0.9) are
    TIRG's recipe in one group.

    See docs/papers.md §2."""
    params = list(params)
    if not params:
        raise ValueError(f"protocol {protocol.name!r}: the default optimiser got no parameters")
    name, lr, wd = protocol.optimizer, protocol.lr, protocol.weight_decay
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=protocol.momentum, weight_decay=wd)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, betas=(protocol.momentum, 0.999), weight_decay=wd)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, betas=(protocol.momentum, 0.999), weight_decay=wd)
    raise ValueError(f"protocol {protocol.name!r}: unknown optimizer {name!r}")


def image_encoder_param_groups(
    model: nn.Module,
    image_encoder: "ImageEncoder",
    lr: float,
    pretrained: bool,
    backbone_lr_mult: float = 0.1,
) -> list[dict]:
    """SGD parameter groups of TIRG's ``main.py`` (also ComposeAE's; TIRG's code gives them to
    every model, baselines included): with ``pretrained`` backbone weights, ``image_fc`` (the
    encoder's final Linear) at ``lr``, ``backbone`` (the ResNet trunk) at
    ``backbone_lr_mult * lr`` and ``rest`` (everything else of ``model``) at ``lr``;
    otherwise, or with ``backbone_lr_mult == 1`` (TIRG's code on CSS: the protocol's
    ``backbone_lr_mult``), one group ``all`` at ``lr``. Only trainable parameters are listed,
    each in exactly one group; empty groups are left out.

    See docs/papers.md §2."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    if not pretrained or backbone_lr_mult == 1.0:
        return [{"params": trainable, "lr": lr, "name": "all"}]
    fc = [p for p in image_encoder.fc.parameters() if p.requires_grad]
    trunk = [p for p in image_encoder.backbone.parameters() if p.requires_grad]
    taken = {id(p) for p in fc} | {id(p) for p in trunk}
    rest = [p for p in trainable if id(p) not in taken]
    groups = [
        {"params": fc, "lr": lr, "name": "image_fc"},
        {"params": trunk, "lr": backbone_lr_mult * lr, "name": "backbone"},
        {"params": rest, "lr": lr, "name": "rest"},
    ]
    return [g for g in groups if g["params"]]
