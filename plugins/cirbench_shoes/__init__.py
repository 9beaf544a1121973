"""cirbench plugin ``shoes``: the Shoes relative captions read from their canonical layout
(docs/papers.md §1.5), identity hits (§0 decision 2), gallery = every eval image.

Protocol ``full-shoes``: no paper in docs/papers.md states a step budget for Shoes (SAC trains
to a validation plateau, §4), so it takes the FashionIQ schedule of ``full-fashioniq``
(ComposeAE's: 100k steps of 32, x0.1 every 8k, wd 1e-6; ResNet-18 (ImageNet), 224 px) with
the K values of SAC Table 3 (R@1/10/50, docs/papers.md §5).
"""

from __future__ import annotations

from cirbench import DatasetSpec, Protocol, hookimpl, pretrained_preset
from cirbench_shoes.dataset import ShoesDataset, ShoesLayout

__all__ = ["FULL_SHOES", "ShoesDataset", "ShoesLayout"]

FULL_SHOES = pretrained_preset(
    "full-shoes",
    "Shoes: the FashionIQ schedule (ResNet-18 (ImageNet), 224 px, 100k steps of 32, x0.1 "
    "every 8k, wd 1e-6); R@1/10/50 (SAC Table 3); for a GPU",
    iterations=100_000,
    ks=(1, 10, 50),
    lr_decay_every=8_000,
)


@hookimpl
def cirbench_datasets() -> list[DatasetSpec]:
    return [ShoesDataset.dataset_spec(
        "Shoes relative captions (train/eval name lists), identity hits, gallery = every eval image",
        presets=[FULL_SHOES.name])]


@hookimpl
def cirbench_protocols() -> list[Protocol]:
    return [FULL_SHOES]
