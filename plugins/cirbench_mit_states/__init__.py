"""cirbench plugin ``mit-states``: MIT-States read from its canonical layout (docs/papers.md
§1.3), TIRG's noun split, pairs and queries, label-based hits. Protocol ``full-mit-states``:
TIRG's MIT-States schedule (docs/papers.md §2) with the paper's K values (Table 2: R@1/5/10).
"""

from __future__ import annotations

from cirbench import DatasetSpec, Protocol, hookimpl, pretrained_preset
from cirbench_mit_states.dataset import TEST_NOUNS, MitStatesDataset, MitStatesLayout

__all__ = ["FULL_MIT_STATES", "MitStatesDataset", "MitStatesLayout", "TEST_NOUNS"]

FULL_MIT_STATES = pretrained_preset(
    "full-mit-states",
    "TIRG's MIT-States schedule: ResNet-18 (ImageNet), 224 px, 160k steps of 32, "
    "x0.1 every 50k, wd 5e-5; R@1/5/10 (TIRG Table 2); for a GPU",
    iterations=160_000,
    ks=(1, 5, 10),
    lr_decay_every=50_000,
    weight_decay=5e-5,
)


@hookimpl
def cirbench_datasets() -> list[DatasetSpec]:
    return [MitStatesDataset.dataset_spec(
        "MIT-States (TIRG's 49 held-out test nouns; text = target adjective), label-based hits",
        presets=[FULL_MIT_STATES.name])]


@hookimpl
def cirbench_protocols() -> list[Protocol]:
    return [FULL_MIT_STATES]
