"""cirbench: a benchmark for composed image retrieval.

The public API for plugin authors is what this module exports (``__all__``); everything else
is internal. The contract (the hooks, :class:`Composer`, :class:`DatasetSpec`, ...) is
indexed in :mod:`cirbench.hookspecs`. Import from here::

    import cirbench
    from cirbench import ImageEncoder, LSTMTextEncoder, NormalizationLayer, base_loss

The contract's types are imported with the package; the helpers (encoders, losses, dataset
loading, caches, hidden-split export, attention drawings) are imported on first use, so
``import cirbench`` stays cheap (the encoders pull in torchvision and transformers).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from cirbench.composer import Composer, ComposerContext, ComposerSpec, TrainBatch, supports_attention_maps
from cirbench.data.contract import CIRDataset, DatasetContext, DatasetSpec, Query, Triplet
from cirbench.hookspecs import hookimpl
from cirbench.protocol import Protocol, pretrained_preset

__version__ = "0.1.0"

#: Helpers a plugin uses, imported on first access: name -> the module that defines it.
_LAZY: dict[str, str] = {
    # encoders (cirbench.encoders): the protocol's image backbone, TIRG's text model, frozen
    # sentence encoders, TIRG's parameter groups
    "ImageEncoder": "cirbench.encoders",
    "LSTMTextEncoder": "cirbench.encoders",
    "SentenceEncoder": "cirbench.encoders",
    "Vocabulary": "cirbench.encoders",
    "build_image_backbone": "cirbench.encoders",
    "image_encoder_param_groups": "cirbench.optim",
    # losses
    "NormalizationLayer": "cirbench.losses",
    "base_loss": "cirbench.losses",
    # datasets read from a local folder (cirbench.data)
    "LocalImageDataset": "cirbench.data",
    "DataLayout": "cirbench.data",
    "DataLocations": "cirbench.data",
    "ImageEntry": "cirbench.data",
    "PublishedCount": "cirbench.data",
    "Requirement": "cirbench.data",
    "list_inside": "cirbench.data",
    "AnnotationError": "cirbench.data",
    "DatasetValidationError": "cirbench.data",
    "Problem": "cirbench.data",
    "check_name": "cirbench.data",
    "read_json": "cirbench.data",
    "read_json_records": "cirbench.data",
    "read_lines": "cirbench.data",
    "read_tsv": "cirbench.data",
    # caches (cirbench.data.cache): generated datasets, frozen text embeddings
    "generated_key": "cirbench.data.cache",
    "load_or_generate": "cirbench.data.cache",
    "load_or_compute_embeddings": "cirbench.data.cache",
    "sources_fingerprint": "cirbench.data.cache",
    "texts_digest": "cirbench.data.cache",
    # hidden test splits (cirbench.export)
    "HiddenQuery": "cirbench.export",
    "HiddenSplit": "cirbench.export",
    "Ranking": "cirbench.export",
    "ExportFormatError": "cirbench.export",
    "check_ranked_names": "cirbench.export",
    "write_json_checked": "cirbench.export",
    # attention maps drawn over reference images
    "save_attention_overlays": "cirbench.attention",
}

if TYPE_CHECKING:  # what static tools see; at run time __getattr__ imports on first use
    from cirbench.attention import save_attention_overlays
    from cirbench.data import (
        AnnotationError,
        DataLayout,
        DataLocations,
        DatasetValidationError,
        ImageEntry,
        LocalImageDataset,
        Problem,
        PublishedCount,
        Requirement,
        check_name,
        list_inside,
        read_json,
        read_json_records,
        read_lines,
        read_tsv,
    )
    from cirbench.data.cache import (
        generated_key,
        load_or_compute_embeddings,
        load_or_generate,
        sources_fingerprint,
        texts_digest,
    )
    from cirbench.encoders import (
        ImageEncoder,
        LSTMTextEncoder,
        SentenceEncoder,
        Vocabulary,
        build_image_backbone,
    )
    from cirbench.optim import image_encoder_param_groups
    from cirbench.export import (
        ExportFormatError,
        HiddenQuery,
        HiddenSplit,
        Ranking,
        check_ranked_names,
        write_json_checked,
    )
    from cirbench.losses import NormalizationLayer, base_loss


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'cirbench' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    # the hooks and the contract
    "hookimpl",
    "Composer",
    "ComposerContext",
    "ComposerSpec",
    "TrainBatch",
    "supports_attention_maps",
    "CIRDataset",
    "DatasetContext",
    "DatasetSpec",
    "Query",
    "Triplet",
    "Protocol",
    "pretrained_preset",
    "__version__",
    # helpers
    *_LAZY,
]
