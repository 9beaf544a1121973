"""Dataset contract and image helpers (public API for dataset plugins)."""

from cirbench.data.contract import CIRDataset, DatasetSpec, Query, Triplet
from cirbench.data.images import normalize_images

__all__ = ["CIRDataset", "DatasetSpec", "Query", "Triplet", "normalize_images"]
