"""The composer contract: what every model plugin provides.

A composer is a :class:`torch.nn.Module` built from a :class:`ComposerContext`. It maps a
query (reference image + modification text) and a gallery image into one embedding space:

* :meth:`Composer.compose` ``(images, texts) -> [B, D]`` for queries;
* :meth:`Composer.embed_target` ``(images) -> [B, D]`` for gallery images;
* :meth:`Composer.training_loss` ``(batch) -> {name: scalar}``: named loss parts; the engine
  optimises their sum and records every part.

Optimisation is the composer's to shape through :meth:`Composer.configure_optimizers`
(several optimisers, parameter groups with their own learning rates). A composer that needs
full control of a step (an adversarial step with its own optimiser, say) sets
``automatic_optimization = False`` and implements :meth:`Composer.training_step`.

Optional: :meth:`Composer.attention_maps` ``(images, texts) -> {level: [B, H, W]}``, the
spatial attention a composer puts on each reference image (one map per level, any names);
``cirbench attention`` draws them over the reference images. :func:`supports_attention_maps`
tells whether a composer provides them.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

import torch
from torch import nn

from cirbench.optim import protocol_optimizer

if TYPE_CHECKING:
    from cirbench.protocol import Protocol


@dataclass(frozen=True)
class ComposerContext:
    """Everything a composer is built from.

    Fields:
        protocol: the protocol (backbone, image size, embedding size, budget).
        train_texts: every training text of the dataset (for a vocabulary).
        base_loss: the dataset's canonical base loss (``soft_triplet`` or
            ``batch_classification``).
        dataset: the dataset's name (for the record; a composer must not special-case it).
        device: where the composer will run.
        cache_dir: a folder the composer may use to keep derived data between runs (e.g.
            frozen text embeddings); None: keep nothing.
    """

    protocol: "Protocol"
    train_texts: Sequence[str]
    base_loss: str = "soft_triplet"
    dataset: str = ""
    device: str = "cpu"
    cache_dir: Path | None = None


@dataclass
class TrainBatch:
    """One training batch, on the composer's device.

    ``reference_images`` and ``target_images`` are normalised float tensors ``[B, 3, S, S]``;
    ``reference_ids`` and ``target_ids`` are ``int64 [B]`` dataset image ids (two rows with the
    same target id share their answer).
    """

    reference_images: torch.Tensor
    texts: list[str]
    target_images: torch.Tensor
    reference_ids: torch.Tensor
    target_ids: torch.Tensor

    def __len__(self) -> int:
        return len(self.texts)


class Composer(nn.Module, abc.ABC):
    """Base class of every composer. See the module docstring for the contract."""

    #: Set False to take over the whole step in :meth:`training_step`.
    automatic_optimization: bool = True

    def __init__(self, ctx: ComposerContext) -> None:
        super().__init__()
        self.ctx = ctx

    @abc.abstractmethod
    def compose(self, images: torch.Tensor, texts: Sequence[str]) -> torch.Tensor:
        """Query embeddings ``[B, D]`` for reference ``images`` ``[B, 3, S, S]`` and ``texts``."""

    @abc.abstractmethod
    def embed_target(self, images: torch.Tensor) -> torch.Tensor:
        """Gallery embeddings ``[B, D]`` for ``images`` ``[B, 3, S, S]``."""

    @abc.abstractmethod
    def training_loss(self, batch: TrainBatch) -> dict[str, torch.Tensor]:
        """Named scalar loss parts for ``batch``; their sum is minimised."""

    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        """Optimisers for training. Default: the protocol's optimiser
        (:func:`cirbench.optim.protocol_optimizer`: its ``optimizer``, ``lr``, ``momentum``,
        ``weight_decay``; the built-in presets: SGD, lr 0.01, momentum 0.9) over all trainable
        parameters. Override it for a recipe of your own (parameter groups, several
        optimisers)."""
        return [protocol_optimizer([p for p in self.parameters() if p.requires_grad], self.ctx.protocol)]

    def on_train_step_start(self, step: int) -> None:
        """Called before every step (0-based); e.g. to unfreeze a backbone after a warm-up."""

    def training_step(
        self, batch: TrainBatch, optimizers: list[torch.optim.Optimizer], step: int
    ) -> dict[str, torch.Tensor]:
        """Only with ``automatic_optimization = False``: do the whole step (backward passes and
        optimiser steps) and return the named loss parts, detached."""
        raise NotImplementedError(
            f"{type(self).__name__} sets automatic_optimization = False "
            "but does not implement training_step"
        )

    def attention_maps(self, images: torch.Tensor, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        """Optional: where the composer looks in each reference image, per level.

        ``images`` are normalised ``[B, 3, S, S]`` as in :meth:`compose`. Returns
        ``{level: [B, H, W]}`` (any level names, e.g. backbone stages; any ``H, W``), each map
        non-negative, typically a distribution over ``H·W``. Called in eval mode without
        gradients. Composers that have no spatial attention leave this unimplemented."""
        raise NotImplementedError(
            f"{type(self).__name__} does not provide attention maps "
            "(it does not implement Composer.attention_maps)"
        )

    def training_parameters(self) -> list[nn.Parameter]:
        """The parameters training updates: every distinct parameter held by the optimisers of
        :meth:`configure_optimizers`, whatever its ``requires_grad`` is now (a schedule may
        freeze part of the model for the first steps; those parameters are still trained)."""
        seen: dict[int, nn.Parameter] = {}
        for opt in self.configure_optimizers():
            for group in opt.param_groups:
                for p in group["params"]:
                    seen.setdefault(id(p), p)
        own = {id(p) for p in self.parameters()}
        return [p for i, p in seen.items() if i in own]

    def parameter_counts(self) -> dict[str, int]:
        """Parameter counts, one rule for every composer:

        * ``total``: every parameter of the module;
        * ``trainable``: the parameters training updates (:meth:`training_parameters`, the
          optimisers' parameters), counted as they are during training, not in the state of
          step 0 (a backbone frozen for a warm-up is trainable);
        * ``frozen``: ``total - trainable``;
        * ``frozen_pretrained``: the part of ``frozen`` that lies in modules loaded from
          pretrained weights (a module with a non-empty ``weights_name``, e.g. a frozen
          sentence encoder), reported apart so that tables can show it in its own column.
        """
        total = sum(p.numel() for p in self.parameters())
        trained = {id(p) for p in self.training_parameters()}
        trainable = sum(p.numel() for p in self.parameters() if id(p) in trained)
        pretrained_ids: set[int] = set()
        for m in self.modules():
            if m is not self and getattr(m, "weights_name", ""):
                pretrained_ids |= {id(p) for p in m.parameters()}
        frozen_pretrained = sum(
            p.numel() for p in self.parameters() if id(p) in pretrained_ids and id(p) not in trained
        )
        return {
            "total": total,
            "trainable": trainable,
            "frozen": total - trainable,
            "frozen_pretrained": frozen_pretrained,
        }

    def pretrained_weights(self) -> list[str]:
        """Names of the pretrained weights this composer loaded (recorded with results)."""
        names: list[str] = []
        for m in self.modules():
            if m is not self and hasattr(m, "weights_name") and m.weights_name:
                names.append(m.weights_name)
        return sorted(set(names))

    @property
    def device(self) -> torch.device:
        for p in self.parameters():
            return p.device
        return torch.device(self.ctx.device)


class ComposerTypeError(TypeError):
    """A composer plugin's ``build(ctx)`` returned something other than a :class:`Composer`."""


def supports_attention_maps(composer: Composer | type) -> bool:
    """Whether ``composer`` (an instance or a class) overrides :meth:`Composer.attention_maps`."""
    cls = composer if isinstance(composer, type) else type(composer)
    return getattr(cls, "attention_maps", Composer.attention_maps) is not Composer.attention_maps


@dataclass(frozen=True)
class ComposerSpec:
    """What a plugin returns from ``cirbench_composers``: a named composer and its builder.

    ``build(ctx)`` returns a :class:`Composer`. ``paper`` cites the method (shown by
    ``cirbench list``). ``ablation_of`` names the composer this one ablates (a paper's
    ablation-table row): ``cirbench run --all`` leaves ablations out unless ``--ablations``
    is given, and runs them when they are named with ``--composer``.
    """

    name: str
    build: Callable[[ComposerContext], Composer]
    description: str = ""
    paper: str = ""
    ablation_of: str = ""
