"""Reference plugin ``baselines``: the three baselines every paper's table starts with
(TIRG, Vo et al. 2019, Tables 1, 2 and 4): ``image-only``, ``text-only`` and ``concat``."""

from __future__ import annotations

from cirbench import ComposerSpec, hookimpl

from cirbench_baselines.models import Concat, ImageOnly, TextOnly

_TIRG = "Vo et al., Composing Text and Image for Image Retrieval, CVPR 2019 (baselines)"


@hookimpl
def cirbench_composers() -> list[ComposerSpec]:
    return [
        ComposerSpec("image-only", ImageOnly, "query = the reference image's feature", _TIRG),
        ComposerSpec("text-only", TextOnly, "query = the modification text's feature", _TIRG),
        ComposerSpec(
            "concat", Concat, "image and text features concatenated, then an MLP", _TIRG
        ),
    ]
