"""cirbench plugin ``cirr``: CIRR read from its canonical layout (docs/papers.md §1.7), evaluated
on the validation split with identity hits on ``target_hard`` (§0 decision 2).

Datasets ``cirr`` (Recall@K: every val image is the gallery, the reference removed) and
``cirr-subset`` (Recall_subset@K: each query ranked among the other members of its image set,
expressed as :attr:`cirbench.Query.candidates`), both from ``<data root>/cirr``. They train on
the same triplets; the two metrics are two runs.

Protocols: none of TIRG, ComposeAE or SAC trains on CIRR, so docs/papers.md states no step budget;
both presets take the FashionIQ schedule of ``full-fashioniq`` (ComposeAE's: 100k steps of
32, x0.1 every 8k, wd 1e-6; ResNet-18 (ImageNet), 224 px). ``full-cirr`` reports CIRR's
Recall@K values (K 1, 2, 5, 10, 50, 100), ``full-cirr-subset`` Recall_subset@K (K 1, 2, 3);
the training fields are equal, so under one seed both train the same model.
"""

from __future__ import annotations

import dataclasses

from cirbench import DatasetSpec, Protocol, hookimpl, pretrained_preset
from cirbench_cirr.dataset import CirrDataset, CirrLayout, CirrSubsetDataset

__all__ = ["CirrDataset", "CirrLayout", "CirrSubsetDataset", "FULL_CIRR", "FULL_CIRR_SUBSET"]

FULL_CIRR = pretrained_preset(
    "full-cirr",
    "CIRR Recall@K: the FashionIQ schedule (ResNet-18 (ImageNet), 224 px, 100k steps of 32, "
    "x0.1 every 8k, wd 1e-6); R@1/2/5/10/50/100 (CIRR's K); for a GPU",
    iterations=100_000,
    ks=(1, 2, 5, 10, 50, 100),
    lr_decay_every=8_000,
)

FULL_CIRR_SUBSET = dataclasses.replace(
    FULL_CIRR,
    name="full-cirr-subset",
    description="CIRR Recall_subset@K (run on cirr-subset): the schedule of full-cirr; K 1/2/3; for a GPU",
    ks=(1, 2, 3),
)


@hookimpl
def cirbench_datasets() -> list[DatasetSpec]:
    return [
        CirrDataset.dataset_spec(
            "CIRR Recall@K: val split, gallery = every val image, identity hits on target_hard",
            presets=[FULL_CIRR.name]),
        CirrSubsetDataset.dataset_spec(
            "CIRR Recall_subset@K: val split, each query ranked among its image set's other members",
            presets=[FULL_CIRR_SUBSET.name]),
    ]


@hookimpl
def cirbench_protocols() -> list[Protocol]:
    return [FULL_CIRR, FULL_CIRR_SUBSET]
