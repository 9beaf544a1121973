"""Attention maps drawn over reference images, for any composer that provides them.

A composer that implements the optional :meth:`cirbench.Composer.attention_maps` returns, for
a batch of queries, one non-negative map ``[B, H, W]`` per level (a distribution over ``H·W``
for softmax attention). This module draws each map over its reference image, the way papers
show where a composer looks for the modification text:

* :func:`compute_attention_maps`: the maps of uint8 reference images, in eval mode without
  gradients, checked (shape, batch, finite, non-negative);
* :func:`save_attention_overlays`: one PNG per query and level, the map bilinearly upsampled
  to the image size and overlaid on the image, titled with the level and the query text;
* :func:`load_saved_model`: the ``state_dict`` that ``cirbench run --save-model`` kept;
* :func:`write_attention_report`: the overlays of some test queries of a dataset plus an
  ``index.md`` listing them (what ``cirbench attention`` writes).

Drawing uses matplotlib's Agg canvas directly (no pyplot state, no display needed).
"""

from __future__ import annotations

import io
import os
import re
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F

from cirbench.composer import Composer, supports_attention_maps
from cirbench.data.contract import CIRDataset
from cirbench.data.model_inputs import normalize_images
from cirbench.storage import atomic_write_bytes, atomic_write_text


class NoAttentionMapsError(TypeError):
    """The composer does not implement :meth:`cirbench.Composer.attention_maps`."""


def compute_attention_maps(
    composer: Composer, images_uint8: torch.Tensor, texts: Sequence[str]
) -> dict[str, torch.Tensor]:
    """``{level: float32 [B, H, W]}`` on the CPU for reference ``images_uint8``
    (``[B, 3, S, S]`` uint8) and ``texts``, computed in eval mode without gradients (the
    composer's training mode is restored). Raises :class:`NoAttentionMapsError` when the
    composer has no attention maps and ``ValueError`` when a map breaks the contract."""
    name = type(composer).__name__
    if not supports_attention_maps(composer):
        raise NoAttentionMapsError(
            f"{name} does not provide attention maps (it does not implement "
            "Composer.attention_maps; see cirbench/composer.py)"
        )
    if len(texts) != len(images_uint8):
        raise ValueError(f"{len(images_uint8)} images but {len(texts)} texts")
    was_training = composer.training
    composer.eval()
    try:
        with torch.inference_mode():
            images = normalize_images(images_uint8, composer.device, composer.ctx.protocol)
            maps = composer.attention_maps(images, list(texts))
    finally:
        composer.train(was_training)
    if not isinstance(maps, dict) or not maps:
        raise ValueError(f"{name}.attention_maps returned {type(maps).__name__}, expected a "
                         "non-empty dict {level: Tensor[B, H, W]}")
    out: dict[str, torch.Tensor] = {}
    for level, m in maps.items():
        where = f"{name}.attention_maps level {level!r}"
        if not isinstance(m, torch.Tensor) or m.ndim != 3 or m.shape[0] != len(texts):
            shape = tuple(m.shape) if isinstance(m, torch.Tensor) else type(m).__name__
            raise ValueError(f"{where}: expected a tensor [B={len(texts)}, H, W], got {shape}")
        m = m.detach().float().cpu().clone()  # a normal tensor (not an inference tensor)
        if not torch.isfinite(m).all():
            raise ValueError(f"{where}: non-finite values")
        if (m < 0).any():
            raise ValueError(f"{where}: negative values (maps must be non-negative)")
        out[str(level)] = m
    return out


def upsample_maps(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``[B, H, W]`` -> ``[B, *size]``, bilinear, each map scaled so its maximum is 1 (an
    all-zero map stays zero)."""
    up = F.interpolate(maps[:, None].float(), size=tuple(size), mode="bilinear", align_corners=False)[:, 0]
    peak = up.flatten(1).amax(1).clamp_min(1e-12).view(-1, 1, 1)
    return (up / peak).clamp_(0.0, 1.0)


def overlay_png(image_uint8: torch.Tensor, heat: torch.Tensor, title: str, dpi: int = 100) -> bytes:
    """A PNG of ``image_uint8`` (``[3, S, S]``) with ``heat`` (``[S, S]`` in [0, 1]) overlaid
    in the ``jet`` colour map, the reference image alone beside it, and ``title`` above."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    img = image_uint8.permute(1, 2, 0).cpu().numpy()
    fig = Figure(figsize=(5.0, 2.9))
    FigureCanvasAgg(fig)
    left, right = fig.subplots(1, 2)
    left.imshow(img)
    left.set_xlabel("reference", fontsize=7)
    right.imshow(img)
    right.imshow(heat.cpu().numpy(), cmap="jet", alpha=0.5, vmin=0.0, vmax=1.0)
    right.set_xlabel("attention (scaled to its maximum)", fontsize=7)
    for ax in (left, right):
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle("\n".join(textwrap.wrap(title, 70)[:3]), fontsize=8)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    return buf.getvalue()


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-.") or "level"


def save_attention_overlays(
    composer: Composer,
    images_uint8: torch.Tensor,
    texts: Sequence[str],
    out_dir: str | os.PathLike,
    stems: Sequence[str] | None = None,
    titles: Sequence[str] | None = None,
) -> list[Path]:
    """Write one PNG per query and level: the level's map bilinearly upsampled to the image
    size and overlaid on the reference image, titled ``"<level>: <title>"`` (the query text
    by default). ``images_uint8``: ``[B, 3, S, S]`` uint8. Files are ``<stem>_<level>.png``
    (stems default to ``000``, ``001``, ...), written atomically. Returns the paths, level by
    level."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stems = list(stems) if stems is not None else [f"{i:03d}" for i in range(len(texts))]
    titles = list(titles) if titles is not None else list(texts)
    if not len(stems) == len(titles) == len(texts):
        raise ValueError(f"{len(texts)} texts, {len(stems)} stems, {len(titles)} titles")
    maps = compute_attention_maps(composer, images_uint8, texts)
    size = tuple(images_uint8.shape[-2:])
    paths: list[Path] = []
    for level, m in maps.items():
        heat = upsample_maps(m, size)
        for i in range(len(texts)):
            path = out / f"{stems[i]}_{_safe(level)}.png"
            atomic_write_bytes(path, overlay_png(images_uint8[i], heat[i], f"{level}: {titles[i]}"))
            paths.append(path)
    return paths


def load_saved_model(composer: Composer, path: str | os.PathLike) -> Composer:
    """Load the ``state_dict`` saved at ``path`` into ``composer`` (strictly: every key must
    match) on the composer's device; returns the composer."""
    state = torch.load(Path(path), map_location=composer.device, weights_only=True)
    composer.load_state_dict(state)
    return composer


@dataclass
class QueryOverlays:
    """The overlays written for one test query."""

    index: int
    text: str
    reference: int
    targets: tuple[int, ...]
    files: list[Path] = field(default_factory=list)


def write_attention_report(
    composer: Composer,
    dataset: CIRDataset,
    indices: Sequence[int],
    out_dir: str | os.PathLike,
    heading: str = "Attention maps",
    batch_size: int = 16,
) -> list[QueryOverlays]:
    """Overlays of the test queries ``indices`` of ``dataset`` (files ``q<index>_<level>.png``)
    and an ``index.md`` listing each query's index, text, reference and target ids, and files."""
    out = Path(out_dir)
    queries = dataset.queries()
    for i in indices:
        if not 0 <= i < len(queries):
            raise IndexError(f"query index {i} out of range: the dataset has {len(queries)} test queries")
    records: list[QueryOverlays] = []
    for start in range(0, len(indices), batch_size):
        chunk = [int(i) for i in indices[start : start + batch_size]]
        qs = [queries[i] for i in chunk]
        images = dataset.images([q.reference for q in qs])
        stems = [f"q{i:05d}" for i in chunk]
        titles = [f"query {i}: {q.text}" for i, q in zip(chunk, qs)]
        paths = save_attention_overlays(composer, images, [q.text for q in qs], out, stems, titles)
        for j, (i, q) in enumerate(zip(chunk, qs)):  # paths run level by level
            records.append(QueryOverlays(i, q.text, int(q.reference), tuple(int(t) for t in q.targets),
                                         paths[j :: len(chunk)]))
    lines = [
        f"# {heading}",
        "",
        "One image per query and level: the reference image, and the level's attention map "
        "bilinearly upsampled to the image size and scaled to its maximum, over it.",
        "",
        "| query | text | reference id | target ids | files |",
        "|---:|---|---:|---|---|",
    ]
    for r in records:
        text = r.text.replace("|", "\\|").replace("\n", " ")
        files = ", ".join(f"[{p.stem[len(f'q{r.index:05d}_'):]}]({p.name})" for p in r.files)
        lines.append(f"| {r.index} | {text} | {r.reference} | {', '.join(map(str, r.targets))} | {files} |")
    atomic_write_text(out / "index.md", "\n".join(lines) + "\n")
    return records
