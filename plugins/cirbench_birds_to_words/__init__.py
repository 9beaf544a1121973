"""cirbench plugin ``birds-to-words``: Birds-to-Words read from its TSV (docs/papers.md §1.6)
under cirbench's protocol (image 1 + description -> image 2 on the test split; gallery =
every test-split image; identity hits; see :mod:`cirbench_birds_to_words.dataset`).

Protocol ``full-birds-to-words``: no paper in docs/papers.md states a step budget (SAC trains to
a validation plateau, §4), so it takes the FashionIQ schedule of ``full-fashioniq``
(ComposeAE's: 100k steps of 32, x0.1 every 8k, wd 1e-6; ResNet-18 (ImageNet), 224 px) with the
K values of SAC Table 2 (R@10/R@50, docs/papers.md §5).
"""

from __future__ import annotations

from cirbench import DatasetSpec, Protocol, hookimpl, pretrained_preset
from cirbench_birds_to_words.dataset import BirdsToWordsDataset, BirdsToWordsLayout, image_entry

__all__ = ["BirdsToWordsDataset", "BirdsToWordsLayout", "FULL_BIRDS_TO_WORDS", "image_entry"]

FULL_BIRDS_TO_WORDS = pretrained_preset(
    "full-birds-to-words",
    "Birds-to-Words: the FashionIQ schedule (ResNet-18 (ImageNet), 224 px, 100k steps of 32, "
    "x0.1 every 8k, wd 1e-6); R@10/R@50 (SAC Table 2); for a GPU",
    iterations=100_000,
    ks=(10, 50),
    lr_decay_every=8_000,
)


@hookimpl
def cirbench_datasets() -> list[DatasetSpec]:
    return [BirdsToWordsDataset.dataset_spec(
        "Birds-to-Words: image 1 + description -> image 2 on the test split, gallery = every "
        "test-split image, identity hits (cirbench's protocol)", presets=[FULL_BIRDS_TO_WORDS.name])]


@hookimpl
def cirbench_protocols() -> list[Protocol]:
    return [FULL_BIRDS_TO_WORDS]
