"""cirbench plugin ``fashion200k``: Fashion200k read from its canonical layout (docs/papers.md
§1.2), TIRG's pairs and test queries, label-based hits. Protocol ``full-fashion200k``: TIRG's
Fashion200k schedule (docs/papers.md §2) with the paper's K values (Table 1: R@1/10/50).
"""

from __future__ import annotations

from cirbench import DatasetSpec, Protocol, hookimpl, pretrained_preset
from cirbench_fashion200k.dataset import Fashion200kDataset, Fashion200kLayout

__all__ = ["FULL_FASHION200K", "Fashion200kDataset", "Fashion200kLayout"]

FULL_FASHION200K = pretrained_preset(
    "full-fashion200k",
    "TIRG's Fashion200k schedule: ResNet-18 (ImageNet), 224 px, 160k steps of 32, "
    "x0.1 every 50k, wd 1e-6; R@1/10/50 (TIRG Table 1); for a GPU",
    iterations=160_000,
    ks=(1, 10, 50),
    lr_decay_every=50_000,
)


@hookimpl
def cirbench_datasets() -> list[DatasetSpec]:
    return [Fashion200kDataset.dataset_spec(
        "Fashion200k (TIRG's pairs 'replace X with Y', its test_queries.txt), label-based hits",
        presets=[FULL_FASHION200K.name])]


@hookimpl
def cirbench_protocols() -> list[Protocol]:
    return [FULL_FASHION200K]
