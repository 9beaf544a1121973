"""Turning the uint8 images a dataset returns into model input."""

from __future__ import annotations

import torch

# ImageNet statistics, as TIRG's transforms use (docs/papers.md §1.1).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def normalize_images(images: torch.Tensor, device: torch.device | str = "cpu") -> torch.Tensor:
    """``uint8 [B, 3, H, W]`` -> ``float32`` on ``device``, scaled to [0, 1] and normalised
    with the ImageNet mean and standard deviation.

    See docs/papers.md §1.2."""
    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(
            f"images must be uint8 [B, 3, H, W], got {images.dtype} {tuple(images.shape)}"
        )
    x = images.to(device, non_blocking=True).float().div_(255.0)
    mean = torch.tensor(IMAGENET_MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=x.device).view(1, 3, 1, 1)
    return x.sub_(mean).div_(std)
