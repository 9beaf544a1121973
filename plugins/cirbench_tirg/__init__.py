"""Reference plugin ``tirg``: TIRG (Vo et al., CVPR 2019), as its public code implements it.

Two composers (docs/papers.md §2; google/tirg ``img_text_composition_models.py``):

* ``tirg``: gated residual composition of the image and text *vectors*
  (``TIRG.compose_img_text_features``): ``f = w_g * sigmoid(gate) * x + w_r * res``.
* ``tirg-lastconv``: the same composition applied to the backbone's last feature *map*
  (``TIRGLastConv``), then average pool and the image fc.

Choices where the paper and the code differ follow the code (docs/papers.md §0 decision 4); the
plugin's README lists each of them and the options.
"""

from __future__ import annotations

from cirbench import ComposerSpec, hookimpl

from cirbench_tirg.models import TIRG, TIRGLastConv, tirg_param_groups

__all__ = ["TIRG", "TIRGLastConv", "tirg_param_groups", "cirbench_composers"]

_PAPER = (
    "Vo, Jiang, Sun, Murphy, Li, Fei-Fei, Hays: Composing Text and Image for Image "
    "Retrieval - An Empirical Odyssey, CVPR 2019 (arXiv:1812.07119)"
)


@hookimpl
def cirbench_composers() -> list[ComposerSpec]:
    return [
        ComposerSpec(
            "tirg",
            TIRG,
            "TIRG: gated image feature + weighted residual from [image, text] (code's "
            "one-layer gate, w_g=1, w_r=10)",
            _PAPER,
        ),
        ComposerSpec(
            "tirg-lastconv",
            TIRGLastConv,
            "TIRG on the last conv map: text tiled over layer4, conv gate + conv residual, "
            "then pool + fc",
            _PAPER,
        ),
    ]
