"""Protocol presets: everything that must be equal for two leaderboard rows to be comparable.

A protocol is frozen and versioned. Its hash (the first 10 hex digits of the SHA-256 of its
canonical JSON form) is written into every result and every leaderboard table; results of two
different hashes are never put in one table. Changing any field of a preset means bumping its
``version`` (which changes the hash), never editing numbers silently.

The image backbone belongs to the protocol, not to the composer (REFERENCE.md §0 decision 7).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any


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
        weight_decay: weight decay every composer's default optimiser uses.
        lr_decay_every: multiply learning rates by ``lr_decay_factor`` every so many steps
            (``None``: constant learning rate).
        lr_decay_factor: see ``lr_decay_every``.
        ks: the K values of Recall@K that are reported.
        seeds: the seeds ``cirbench run --all`` runs.
        eval_batch_size: images per forward pass when embedding for evaluation (does not
            change the numbers, only speed and memory).
        eval_chunk: queries scored at once (memory is bounded by eval_chunk x gallery).
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
    # Fields excluded from the hash: they change speed or memory, never the numbers.
    _UNHASHED = ("description", "eval_batch_size", "eval_chunk")

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

    def as_dict(self) -> dict[str, Any]:
        """All fields as plain JSON-able values."""
        d = dataclasses.asdict(self)
        d["ks"] = list(self.ks)
        d["seeds"] = list(self.seeds)
        return d

    @property
    def hash(self) -> str:
        """Short stable hash of the fields that decide the numbers."""
        d = {k: v for k, v in self.as_dict().items() if k not in self._UNHASHED}
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
        version=2,
        description="the default: CPU-feasible budget on small data, 32 px (README main job)",
        dataset_scale="small",
        backbone="resnet18",
        pretrained=False,
        image_size=32,
        embed_dim=512,
        batch_size=32,
        iterations=200,
        ks=(1, 5, 10, 50),
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
) -> Protocol:
    """A paper-scale preset for a real dataset, fixing what TIRG's, ComposeAE's and SAC's
    schedules share (REFERENCE.md §2, §3): ResNet-18 with ImageNet weights at 224 px,
    d = 512, batch 32, the dataset's canonical splits, seeds 0, 1, 2. The budget, decay,
    weight decay and K values are the dataset's own (dataset plugins contribute theirs
    through ``cirbench_protocols``)."""
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
    )
