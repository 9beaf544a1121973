"""Reference plugin ``sac``: SAC (Jandial, Badjatiya, Chawla, Krishnamurthy, Chandra:
"SAC: Semantic Attention Composition for Text-Conditioned Image Retrieval", WACV 2022).

SAC has no public code; every module maps to a numbered equation (see
:mod:`cirbench_sac.modules`) and every open detail is a named keyword of :class:`SAC`
(docs/papers.md §0 decision 6, §4, §6 item 10). Registered composers: ``sac`` (the reading issue
11's experiment supports: Eq. 17 as written, the target sharing the query's BN+Omega head),
the other readings (``sac-literal``, ``sac-detached-cons``, ``sac-shared-head``,
``sac-detached-cons-shared-head``, ``sac-batch-negatives``) and the ablations of the paper's
Tables 4, 6 and 7 (all listed in the plugin README, with the experiment).
"""

from __future__ import annotations

from functools import partial

from cirbench import ComposerSpec, hookimpl, save_attention_overlays  # Fig. 4 is drawn by the core

from cirbench_sac.model import SAC

__all__ = ["SAC", "save_attention_overlays", "cirbench_composers", "ABLATIONS", "LITERAL", "SAC_DEFAULTS"]

_PAPER = (
    "Jandial, Badjatiya, Chawla, Krishnamurthy, Chandra: SAC: Semantic Attention Composition "
    "for Text-Conditioned Image Retrieval, WACV 2022 (arXiv:2009.01485)"
)

#: The two literal readings of the paper that issue 11 settled by experiment (plugin README,
#: "Which SAC"): the consistency loss's targets (Eq. 17) and the target's head (Eq. 13).
LITERAL = {"cons_targets": "live", "target_head": False}
#: What the leaderboard's ``sac`` uses on top of :class:`SAC`'s defaults (the experiment's
#: choice; every reading stays registered below under a name that says what it changes).
SAC_DEFAULTS: dict = {"cons_targets": "live", "target_head": True}

#: name -> (SAC keywords, description, ablation_of)
ABLATIONS: dict[str, tuple[dict, str]] = {
    "sac": (SAC_DEFAULTS, "SAC: SFA on the protocol's two feature stages, SFM LSTM, residual "
            "offsetting, triplet+disc+cons (Eq. 17 as written; the target shares the query's "
            "BN+Omega head)"),
    "sac-literal": (LITERAL, "SAC read literally: Eq. 17 with live (non-detached) consistency "
                    "targets, Eq. 13's separate target path (no BN+Omega head)"),
    "sac-detached-cons": ({**LITERAL, "cons_targets": "detached"},
                          "SAC literal but Eq. 17's targets detached (stop-gradient)"),
    "sac-shared-head": ({**LITERAL, "target_head": True},
                        "SAC literal but the target shares the query's BN+Omega head (Eq. 13)"),
    "sac-detached-cons-shared-head": ({"cons_targets": "detached", "target_head": True},
                                      "SAC with both changes (detached Eq. 17 targets, shared head)"),
    "sac-l1-only": ({"levels": "l1"}, "SAC Table 7: level 1 (the protocol's first stage) only"),
    "sac-l2-only": ({"levels": "l2"}, "SAC Table 7: level 2 (the protocol's second stage) only"),
    "sac-triplet-only": ({"losses": "triplet"}, "SAC Table 6: triplet loss only"),
    "sac-no-disc": ({"losses": "triplet+cons"}, "SAC Table 6: triplet + consistency"),
    "sac-no-cons": ({"losses": "triplet+disc"}, "SAC Table 6: triplet + discriminator"),
    "sac-concat": ({"composition": "concat"}, "SAC Table 4: concat composition"),
    "sac-gating": ({"composition": "gating"}, "SAC Table 4: residual gating composition"),
    "sac-hadamard": ({"composition": "hadamard"}, "SAC Table 4: Hadamard composition"),
    "sac-batch-negatives": ({"bank_size": 0}, "SAC with Eq. 15's negatives from the batch only "
                            "(no memory bank)"),
}


@hookimpl
def cirbench_composers() -> list[ComposerSpec]:
    return [
        ComposerSpec(
            name, partial(SAC, **{**SAC_DEFAULTS, **kw}), desc, _PAPER,
            ablation_of="" if name == "sac" else "sac",
        )
        for name, (kw, desc) in ABLATIONS.items()
    ]
