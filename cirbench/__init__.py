"""cirbench: a benchmark for composed image retrieval.

The public API for plugin authors is what this module exports; everything else is internal.
"""

from cirbench.composer import Composer, ComposerContext, ComposerSpec, TrainBatch
from cirbench.data.contract import CIRDataset, DatasetSpec, Query, Triplet
from cirbench.hookspecs import hookimpl
from cirbench.protocol import Protocol, pretrained_preset

__version__ = "0.1.0"

__all__ = [
    "CIRDataset",
    "Composer",
    "ComposerContext",
    "ComposerSpec",
    "DatasetSpec",
    "Protocol",
    "Query",
    "TrainBatch",
    "Triplet",
    "hookimpl",
    "pretrained_preset",
    "__version__",
]
