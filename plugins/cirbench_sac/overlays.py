"""SAC Fig. 4: the semantic attention map of each level drawn over the reference image."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F


def save_attention_overlays(
    composer, images_uint8: torch.Tensor, texts: Sequence[str], out_dir: str | os.PathLike
) -> list[Path]:
    """Write one PNG per query and level: ``M`` (Eq. 8) bilinearly upsampled to the image size
    and overlaid on the reference image. ``images_uint8``: ``[B, 3, S, S]`` uint8 (0..255).
    Returns the written paths (``{i:03d}_{stage}.png``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from cirbench.data.images import normalize_images

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    was_training = composer.training
    composer.eval()
    try:
        x = normalize_images(images_uint8, composer.device)
        maps = composer.attention_maps(x, texts)
    finally:
        composer.train(was_training)
    size = images_uint8.shape[-2:]
    paths = []
    for stage, m in maps.items():
        up = F.interpolate(m[:, None].float().cpu(), size=size, mode="bilinear", align_corners=False)[:, 0]
        for i in range(len(texts)):
            fig, ax = plt.subplots(figsize=(3, 3))
            ax.imshow(images_uint8[i].permute(1, 2, 0).cpu().numpy())
            ax.imshow(up[i].numpy(), cmap="jet", alpha=0.5)
            ax.set_title(f"{stage}: {texts[i]}"[:60], fontsize=7)
            ax.axis("off")
            path = out / f"{i:03d}_{stage}.png"
            fig.savefig(path, dpi=80, bbox_inches="tight")
            plt.close(fig)
            paths.append(path)
    return paths
