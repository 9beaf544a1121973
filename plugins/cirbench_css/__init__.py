"""cirbench plugin ``css``: TIRG's CSS dataset read from its original file (docs/papers.md §1.1).

Datasets ``css`` (the 3D images) and ``css-2d`` (the same scenes drawn with TIRG's 2D rules by
css-synth's renderer), both from ``<data root>/css/css_toy_dataset_novel2_small.dup.npy``;
label-based hits (decision 2). Protocol ``full-css``: TIRG's CSS schedule (docs/papers.md §2).
"""

from __future__ import annotations

from cirbench import DatasetSpec, Protocol, hookimpl, pretrained_preset
from cirbench_css.dataset import Css2dDataset, CssDataset, CssLayout, Css2dLayout
from cirbench_css.reader import CSS_FILE, read_css_file

__all__ = ["CSS_FILE", "Css2dDataset", "Css2dLayout", "CssDataset", "CssLayout", "FULL_CSS", "read_css_file"]

FULL_CSS = pretrained_preset(
    "full-css",
    "TIRG's CSS schedule: ResNet-18 (ImageNet), 224 px, 160k steps of 32, no decay, "
    "wd 1e-6; R@1 (TIRG Table 4) and the other K of TIRG's test code; for a GPU",
    iterations=160_000,
    ks=(1, 5, 10, 50, 100),
    # v2 (issue 11): TIRG's main.py trains CSS with one parameter group at the full lr (its
    # backbone still ImageNet-pretrained); every other dataset gets the trunk at 0.1 lr.
    version=2,
    backbone_lr_mult=1.0,
)


@hookimpl
def cirbench_datasets() -> list[DatasetSpec]:
    return [
        CssDataset.dataset_spec(
            "TIRG's CSS (3D images) from css_toy_dataset_novel2_small.dup.npy: add/remove/change, "
            "label-based hits", presets=[FULL_CSS.name]),
        DatasetSpec(
            name="css-2d", build=Css2dDataset.build, layout=Css2dDataset.layout,
            description="TIRG's CSS scenes drawn by the 2D renderer (needs only the .npy), "
            "label-based hits", presets=(FULL_CSS.name,)),
    ]


@hookimpl
def cirbench_protocols() -> list[Protocol]:
    return [FULL_CSS]
