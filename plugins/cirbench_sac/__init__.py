"""Reference plugin ``sac``: SAC (Jandial, Badjatiya, Chawla, Krishnamurthy, Chandra:
"SAC: Semantic Attention Composition for Text-Conditioned Image Retrieval", WACV 2022).

SAC has no public code; every module maps to a numbered equation (see
:mod:`cirbench_sac.modules`) and every open detail is a named keyword of :class:`SAC`
(REFERENCE.md §0 decision 6, §4, §6 item 10). Registered composers: ``sac`` and the ablations
of the paper's Tables 4, 6 and 7 (listed in the plugin README).
"""

from __future__ import annotations

from functools import partial

from cirbench import ComposerSpec, hookimpl
from cirbench.attention import save_attention_overlays  # Fig. 4, drawn by the core

from cirbench_sac.model import SAC

__all__ = ["SAC", "save_attention_overlays", "cirbench_composers", "ABLATIONS"]

_PAPER = (
    "Jandial, Badjatiya, Chawla, Krishnamurthy, Chandra: SAC: Semantic Attention Composition "
    "for Text-Conditioned Image Retrieval, WACV 2022 (arXiv:2009.01485)"
)

#: name -> (SAC keywords, description)
ABLATIONS: dict[str, tuple[dict, str]] = {
    "sac": ({}, "SAC: SFA on layer3+layer4, SFM LSTM, residual offsetting, triplet+disc+cons"),
    "sac-l1-only": ({"levels": "l1"}, "SAC Table 7: level 1 (layer3) only"),
    "sac-l2-only": ({"levels": "l2"}, "SAC Table 7: level 2 (layer4) only"),
    "sac-triplet-only": ({"losses": "triplet"}, "SAC Table 6: triplet loss only"),
    "sac-no-disc": ({"losses": "triplet+cons"}, "SAC Table 6: triplet + consistency"),
    "sac-no-cons": ({"losses": "triplet+disc"}, "SAC Table 6: triplet + discriminator"),
    "sac-concat": ({"composition": "concat"}, "SAC Table 4: concat composition"),
    "sac-gating": ({"composition": "gating"}, "SAC Table 4: residual gating composition"),
    "sac-hadamard": ({"composition": "hadamard"}, "SAC Table 4: Hadamard composition"),
}


@hookimpl
def cirbench_composers() -> list[ComposerSpec]:
    return [
        ComposerSpec(name, partial(SAC, **kw), desc, _PAPER, ablation_of="" if name == "sac" else "sac")
        for name, (kw, desc) in ABLATIONS.items()
    ]
