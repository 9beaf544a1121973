"""cirbench plugin ``css-synth``: an embedded synthetic dataset in the spirit of TIRG's CSS.

Scenes of 1..5 objects (cube / sphere / cylinder, TIRG's 8 colours, small / large) on a 3x3
grid, rendered with TIRG's 64x64 2D drawing rules; queries are CSS's add / remove / change
modifications with label-based hits (docs/papers.md §1.0, §1.1). The data are generated from a
fixed seed at the protocol's ``dataset_scale`` and cached; see :mod:`.generator`,
:mod:`.cache` and :mod:`.dataset`.
"""

from __future__ import annotations

from cirbench import DatasetSpec, hookimpl
from cirbench_css_synth.dataset import GENERATION_SEED, CssSynthDataset, build
from cirbench_css_synth.generator import GEN_VERSION, render_scene

__all__ = ["GEN_VERSION", "GENERATION_SEED", "CssSynthDataset", "build", "render_scene"]


@hookimpl
def cirbench_datasets() -> list[DatasetSpec]:
    return [
        DatasetSpec(
            name="css-synth",
            build=build,
            description=(
                "synthetic CSS-like scenes (TIRG's 2D renderer): add/remove/change "
                "modifications, label-based hits; generated and cached, no download"
            ),
            presets=("quick", "smoke", "full"),
        )
    ]
