"""cirbench plugin ``fashioniq``: FashionIQ read from its canonical layout (docs/papers.md §1.4).

Datasets ``fashioniq`` (VAL's protocol, §0 decision 3: validation split, one query per
caption, a gallery per category, identity hits) and ``fashioniq-joined`` (the two captions
joined into one query by ComposeAE's rule; otherwise the same), both from
``<data root>/fashioniq``.

Protocol ``full-fashioniq`` (for both): ComposeAE's FashionIQ schedule (docs/papers.md §3:
100k steps of 32, x0.1 every 8k, wd 1e-6) with TIRG's ResNet-18 (ImageNet) at 224 px, and the
K values FashionIQ results are reported at (R@10, R@50 per category and their mean; SAC
Table 1, docs/papers.md §5).
"""

from __future__ import annotations

from cirbench import DatasetSpec, Protocol, hookimpl, pretrained_preset
from cirbench_fashioniq.dataset import (
    CATEGORIES,
    FashionIQDataset,
    FashionIQJoinedDataset,
    FashionIQLayout,
    join_captions,
)

__all__ = ["CATEGORIES", "FULL_FASHIONIQ", "FashionIQDataset", "FashionIQJoinedDataset", "FashionIQLayout",
           "join_captions"]

FULL_FASHIONIQ = pretrained_preset(
    "full-fashioniq",
    "ComposeAE's FashionIQ schedule: ResNet-18 (ImageNet), 224 px, 100k steps of 32, "
    "x0.1 every 8k, wd 1e-6; R@10/R@50 per category (SAC Table 1); for a GPU",
    iterations=100_000,
    ks=(10, 50),
    lr_decay_every=8_000,
)


@hookimpl
def cirbench_datasets() -> list[DatasetSpec]:
    return [
        FashionIQDataset.dataset_spec(
            "FashionIQ, VAL's protocol: val split, one query per caption, a gallery per category "
            "(dress, shirt, toptee), identity hits", presets=[FULL_FASHIONIQ.name]),
        FashionIQJoinedDataset.dataset_spec(
            "FashionIQ with each pair's two captions joined into one query (ComposeAE's rule); "
            "val split, a gallery per category, identity hits", presets=[FULL_FASHIONIQ.name]),
    ]


@hookimpl
def cirbench_protocols() -> list[Protocol]:
    return [FULL_FASHIONIQ]
