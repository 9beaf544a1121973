"""Model inputs: the uint8 images a dataset returns, normalised as the protocol says.

Datasets return ``uint8 [B, 3, S, S]`` images (:meth:`cirbench.data.CIRDataset.images`); a
composer sees them as ``float32``, scaled to [0, 1] and normalised per channel with the
protocol's :attr:`~cirbench.protocol.Protocol.image_mean` and
:attr:`~cirbench.protocol.Protocol.image_std` (default: ImageNet's statistics,
docs/papers.md §1.1). Everything that feeds a composer (training batches, evaluation,
attention maps, export) goes through :func:`normalize_images`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import torch

from cirbench.protocol import IMAGENET_MEAN, IMAGENET_STD

if TYPE_CHECKING:
    from cirbench.protocol import Protocol

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "normalize_images"]


def normalize_images(
    images: torch.Tensor,
    device: torch.device | str = "cpu",
    protocol: "Protocol | None" = None,
    *,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> torch.Tensor:
    """``uint8 [B, 3, H, W]`` -> ``float32 [B, 3, H, W]`` on ``device``: ``(x / 255 - mean) /
    std`` per channel.

    The statistics are ``mean`` / ``std`` when given, else ``protocol.image_mean`` /
    ``protocol.image_std``, else the protocol's defaults (ImageNet's, :data:`IMAGENET_MEAN`,
    :data:`IMAGENET_STD`). Raises ValueError for anything but a uint8 ``[B, 3, H, W]`` tensor
    or statistics that are not three values (std > 0).

    See docs/papers.md §1.2."""
    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(
            f"images must be uint8 [B, 3, H, W], got {images.dtype} {tuple(images.shape)}"
        )
    if mean is None:
        mean = protocol.image_mean if protocol is not None else IMAGENET_MEAN
    if std is None:
        std = protocol.image_std if protocol is not None else IMAGENET_STD
    if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
        raise ValueError(f"normalisation needs 3 means and 3 stds > 0, got mean={mean!r}, std={std!r}")
    x = images.to(device, non_blocking=True).float().div_(255.0)
    mean_t = torch.tensor(tuple(mean), device=x.device).view(1, 3, 1, 1)
    std_t = torch.tensor(tuple(std), device=x.device).view(1, 3, 1, 1)
    return x.sub_(mean_t).div_(std_t)
