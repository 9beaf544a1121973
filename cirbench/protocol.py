"""Protocol presets: everything that must be equal for two leaderboard rows to be comparable.

A protocol is frozen and versioned. Its hash (the first 10 hex digits of the SHA-256 of its
canonical JSON form) is written into every result and every leaderboard table; results of two
different hashes are never put in one table. Changing any field of a preset means bumping its
``version`` (which changes the hash), never editing numbers silently.

The image backbone belongs to the protocol, not to the composer (docs/papers.md §0 decision 7).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass
from typing import Any

#: ImageNet's per-channel mean and standard deviation of RGB pixels in [0, 1]: the defaults of
#: :attr:`Protocol.image_mean` / :attr:`Protocol.image_std` (torchvision's ResNets were trained
#: with them; TIRG's transforms use them, docs/papers.md §1.1).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: The optimisers a protocol can name for composers that keep the default
#: :meth:`cirbench.Composer.configure_optimizers` (built by :func:`cirbench.optim.protocol_optimizer`).
OPTIMIZERS = ("sgd", "adam", "adamw")


#: The values of :attr:`Protocol.precision` (:func:`cirbench.train.autocast` applies them).
PRECISIONS = ("fp32", "bf16")


@dataclass(frozen=True)
class Protocol:
    """A fixed evaluation protocol.

    Fields:
        name: the preset's public name (``smoke``, ``quick``, ``full``, ...).
        version: bumped whenever any other field changes.
        description: one line for ``cirbench list``.
        dataset_scale: how much of a dataset to use: ``tiny`` (tests), ``small`` (CPU) or
            ``full`` (the dataset's canonical size). Datasets interpret it; real datasets
            use their canonical splits at ``full``.
        backbone: torchvision ResNet name for the image encoder (``resnet18``, ``resnet50``).
        pretrained: whether ImageNet weights are used; they must be present locally.
        image_size: square input size in pixels.
        embed_dim: size of the retrieval embedding every composer produces.
        batch_size: training batch size (triplets per step).
        iterations: training steps.
        weight_decay: weight decay of the default optimiser (composers with their own recipe
            use it too: every reference composer does).
        lr_decay_every: multiply learning rates by ``lr_decay_factor`` every so many steps
            (``None``: constant learning rate).
        lr_decay_factor: see ``lr_decay_every``.
        ks: the K values of Recall@K that are reported.
        seeds: the seeds ``cirbench run --all`` runs.
        eval_batch_size: images per forward pass when embedding for evaluation (does not
            change the numbers, only speed and memory).
        eval_chunk: queries scored at once (memory is bounded by eval_chunk x gallery).
        feature_stages: the two backbone stages (``layer1`` .. ``layer4``, shallower first)
            that multi-level composers attend over (SAC's levels 1 and 2). Part of the
            protocol because the image size decides their map sizes: at 32 px a ResNet's
            ``layer4`` map is 1x1 and ``layer3`` 2x2, and attention over one position cannot
            depend on the text.
        backbone_lr_mult: with ``pretrained`` weights, the ResNet trunk (all of it but the
            image fc) learns at this fraction of a composer's learning rate (TIRG's
            ``main.py``: 0.1, for every model on every dataset but CSS, where it is one group
            at the full rate: 1.0). Composers using
            :func:`cirbench.optim.image_encoder_param_groups` follow it.
        optimizer: the default optimiser: what :meth:`cirbench.Composer.configure_optimizers`
            builds for a composer that does not override it (:func:`cirbench.optim.
            protocol_optimizer`), over all trainable parameters: ``sgd`` (default; with
            ``momentum``), ``adam`` or ``adamw`` (``momentum`` is their beta1, beta2 = 0.999).
            A composer with its own recipe (TIRG's SGD groups, SAC's Adam) keeps its recipe.
        lr: the default optimiser's learning rate (default 0.01).
        momentum: the default optimiser's momentum (SGD) or beta1 (Adam, AdamW); default 0.9.
            The defaults ``sgd``, 0.01, 0.9 (and ``weight_decay``) are the recipe of TIRG's
            ``main.py`` (docs/papers.md §2), which was the engine's only default before these
            fields existed.
        image_mean, image_std: per-channel (R, G, B) mean and standard deviation, for pixels
            scaled to [0, 1], with which the engine normalises every image before a composer
            sees it (:func:`cirbench.data.model_inputs.normalize_images`). Default: ImageNet's
            statistics (:data:`IMAGENET_MEAN`, :data:`IMAGENET_STD`), those the torchvision
            backbones were trained with; a protocol without pretrained weights may use others.
        precision: the arithmetic of training's forward passes: ``fp32`` (float32
            throughout) or ``bf16`` (``torch.autocast`` to bfloat16, on CUDA or CPU; the
            backward pass and the optimiser steps stay float32; evaluation embeds in
            float32). It changes the numbers, so it is hashed.

    Hash rule for fields added after a preset was published (``feature_stages``,
    ``backbone_lr_mult``, ``optimizer``, ``lr``, ``momentum``, ``image_mean``, ``image_std``,
    ``precision``): a field at its default is left out of the hashed form, so adding the field
    did not change the hash of any preset that keeps the default.
    """

    name: str
    version: int
    description: str
    dataset_scale: str
    backbone: str
    pretrained: bool
    image_size: int
    embed_dim: int
    batch_size: int
    iterations: int
    weight_decay: float = 1e-6
    lr_decay_every: int | None = None
    lr_decay_factor: float = 0.1
    ks: tuple[int, ...] = (1, 5, 10, 50)
    seeds: tuple[int, ...] = (0,)
    eval_batch_size: int = 256
    eval_chunk: int = 1024
    feature_stages: tuple[str, str] = ("layer3", "layer4")
    backbone_lr_mult: float = 0.1
    optimizer: str = "sgd"
    lr: float = 0.01
    momentum: float = 0.9
    image_mean: tuple[float, float, float] = IMAGENET_MEAN
    image_std: tuple[float, float, float] = IMAGENET_STD
    precision: str = "fp32"
    # Fields excluded from the hash: they change speed or memory, never the numbers.
    _UNHASHED = ("description", "eval_batch_size", "eval_chunk")
    # Fields added later: hashed only when they differ from these defaults (old hashes stay).
    _HASHED_UNLESS_DEFAULT = {
        "feature_stages": ["layer3", "layer4"],
        "backbone_lr_mult": 0.1,
        "optimizer": "sgd",
        "lr": 0.01,
        "momentum": 0.9,
        "image_mean": list(IMAGENET_MEAN),
        "image_std": list(IMAGENET_STD),
        "precision": "fp32",
    }

    def __post_init__(self) -> None:
        if self.dataset_scale not in ("tiny", "small", "full"):
            raise ValueError(
                f"protocol {self.name!r}: field dataset_scale must be tiny, small or full, "
                f"got {self.dataset_scale!r}"
            )
        for fname in ("image_size", "embed_dim", "batch_size", "iterations"):
            if getattr(self, fname) < 1:
                raise ValueError(f"protocol {self.name!r}: field {fname} must be >= 1")
        if not self.ks or any(k < 1 for k in self.ks) or list(self.ks) != sorted(set(self.ks)):
            raise ValueError(f"protocol {self.name!r}: field ks must be increasing positive ints")
        stages = ("layer1", "layer2", "layer3", "layer4")
        fs = tuple(self.feature_stages)
        if len(fs) != 2 or any(s not in stages for s in fs) or stages.index(fs[0]) >= stages.index(fs[1]):
            raise ValueError(
                f"protocol {self.name!r}: field feature_stages must be two of {stages}, the "
                f"shallower first, got {self.feature_stages!r}"
            )
        object.__setattr__(self, "feature_stages", fs)
        if not 0.0 < self.backbone_lr_mult <= 1.0:
            raise ValueError(
                f"protocol {self.name!r}: field backbone_lr_mult must be in (0, 1], "
                f"got {self.backbone_lr_mult!r}"
            )
        if self.precision not in PRECISIONS:
            raise ValueError(
                f"protocol {self.name!r}: field precision must be one of {', '.join(PRECISIONS)}, "
                f"got {self.precision!r}"
            )
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(
                f"protocol {self.name!r}: field optimizer must be one of {', '.join(OPTIMIZERS)}, "
                f"got {self.optimizer!r}"
            )
        if not self.lr > 0:
            raise ValueError(f"protocol {self.name!r}: field lr must be > 0, got {self.lr!r}")
        if not 0.0 <= self.momentum < 1.0:
            raise ValueError(
                f"protocol {self.name!r}: field momentum must be in [0, 1), got {self.momentum!r}"
            )
        for fname in ("image_mean", "image_std"):
            value = getattr(self, fname)
            try:
                stats = tuple(float(v) for v in value)
            except (TypeError, ValueError):
                stats = ()
            if (len(stats) != 3 or not all(math.isfinite(v) for v in stats)
                    or (fname == "image_std" and not all(v > 0 for v in stats))):
                need = "three finite floats" + (" > 0" if fname == "image_std" else "")
                raise ValueError(
                    f"protocol {self.name!r}: field {fname} must be {need} (R, G, B), got {value!r}"
                )
            object.__setattr__(self, fname, stats)

    def as_dict(self) -> dict[str, Any]:
        """All fields as plain JSON-able values."""
        d = dataclasses.asdict(self)
        d["ks"] = list(self.ks)
        d["seeds"] = list(self.seeds)
        d["feature_stages"] = list(self.feature_stages)
        d["image_mean"] = list(self.image_mean)
        d["image_std"] = list(self.image_std)
        return d

    @property
    def hash(self) -> str:
        """Short stable hash of the fields that decide the numbers."""
        d = {
            k: v
            for k, v in self.as_dict().items()
            if k not in self._UNHASHED and self._HASHED_UNLESS_DEFAULT.get(k, object()) != v
        }
        blob = json.dumps(d, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:10]

    @property
    def label(self) -> str:
        """``name@hash``: how a protocol is shown in results and tables."""
        return f"{self.name}@{self.hash}"


BUILTIN_PROTOCOLS: tuple[Protocol, ...] = (
    Protocol(
        name="smoke",
        version=1,
        description="seconds: tiny data, a handful of steps; for tests, not for numbers",
        dataset_scale="tiny",
        backbone="resnet18",
        pretrained=False,
        image_size=64,
        embed_dim=64,
        batch_size=8,
        iterations=4,
        ks=(1, 5, 10),
        eval_batch_size=64,
    ),
    Protocol(
        name="quick",
        # v1: 64 px, 300 iterations: the main grid did not fit the main job's 15 minutes on
        # a 2-core CPU. At 32 px a step costs ~0.7x and composers learn faster per step.
        # v2 -> v3 (issue 11): at 32 px layer3+layer4 maps are 2x2 and 1x1, so SAC's level-2
        # attention could not depend on the text; multi-level composers now use layer2+layer3
        # (4x4 and 2x2), and three seeds.
        version=3,
        description="the default: CPU-feasible budget on small data, 32 px, levels "
        "layer2+layer3, seeds 0-2 (README main job: seed 0)",
        dataset_scale="small",
        backbone="resnet18",
        pretrained=False,
        image_size=32,
        embed_dim=512,
        batch_size=32,
        iterations=200,
        ks=(1, 5, 10, 50),
        seeds=(0, 1, 2),
        feature_stages=("layer2", "layer3"),
    ),
    Protocol(
        name="full",
        version=1,
        description="paper-scale budget (TIRG's CSS schedule: 160k steps, batch 32); for a GPU",
        dataset_scale="full",
        backbone="resnet18",
        pretrained=False,
        image_size=64,
        embed_dim=512,
        batch_size=32,
        iterations=160_000,
        ks=(1, 5, 10, 50),
        seeds=(0, 1, 2),
    ),
)

DEFAULT_PROTOCOL = "quick"


def pretrained_preset(
    name: str,
    description: str,
    *,
    iterations: int,
    ks: tuple[int, ...],
    lr_decay_every: int | None = None,
    weight_decay: float = 1e-6,
    version: int = 1,
    backbone_lr_mult: float = 0.1,
) -> Protocol:
    """A paper-scale preset for a real dataset, fixing what TIRG's, ComposeAE's and SAC's
    schedules share (docs/papers.md §2, §3): ResNet-18 with ImageNet weights at 224 px,
    d = 512, batch 32, the dataset's canonical splits, seeds 0, 1, 2. The budget, decay,
    weight decay and K values are the dataset's own (dataset plugins contribute theirs
    through ``cirbench_protocols``), and so is ``backbone_lr_mult`` (TIRG's code: 0.1, but
    1.0, one group, on CSS)."""
    return Protocol(
        name=name,
        version=version,
        description=description,
        dataset_scale="full",
        backbone="resnet18",
        pretrained=True,
        image_size=224,
        embed_dim=512,
        batch_size=32,
        iterations=iterations,
        weight_decay=weight_decay,
        lr_decay_every=lr_decay_every,
        ks=ks,
        seeds=(0, 1, 2),
        backbone_lr_mult=backbone_lr_mult,
    )
