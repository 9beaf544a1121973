"""Dataset contract and data machinery (public API for dataset plugins).

* :mod:`~cirbench.data.contract`: the contract (:class:`CIRDataset`, :class:`DatasetSpec`,
  :class:`DatasetContext`, :class:`Query`, :class:`Triplet`);
* :mod:`~cirbench.data.local`: :class:`LocalImageDataset`, the base of loaders of image
  files listed by relative path under a root, and its :class:`ImageIndex`;
* :mod:`~cirbench.data.layout`: :class:`DataLayout`, :class:`Requirement`,
  :class:`PublishedCount` (what a local copy must hold);
* :mod:`~cirbench.data.locations`: :class:`DataLocations` (``--data-root``,
  ``$CIRBENCH_DATA``, per-dataset overrides);
* :mod:`~cirbench.data.errors`: :class:`DatasetNotAvailable`, :class:`UnsafePathError`,
  :class:`CorruptImageError` (and :class:`UnsupportedImageModeError`), :class:`AnnotationError`,
  :class:`DatasetValidationError`;
* :mod:`~cirbench.data.annotations`: the one strict reader of annotation files
  (:func:`read_lines`, :func:`read_tsv`, :func:`read_json`, :func:`read_json_records`);
* :mod:`~cirbench.data.validate`: the checks every dataset passes before training
  (:func:`validate_dataset`);
* :mod:`~cirbench.data.model_inputs`: :func:`normalize_images` (uint8 images -> the
  composer's float input, with the protocol's ``image_mean`` / ``image_std``);
* :mod:`~cirbench.data.paths` (the rule for symbolic links), :mod:`~cirbench.data.decode`,
  :mod:`~cirbench.data.cache` (every cache: decoded images,
  generated datasets, text embeddings), :mod:`~cirbench.data.verify`.
"""

from cirbench.data.annotations import (
    check_name,
    json_path,
    read_json,
    read_json_records,
    read_lines,
    read_text,
    read_tsv,
)
from cirbench.data.contract import Availability, CIRDataset, DatasetContext, DatasetSpec, Query, Triplet
from cirbench.data.decode import ImageTransform, decode_image, display_rgb
from cirbench.data.errors import (
    AnnotationError,
    CorruptImageError,
    DatasetNotAvailable,
    DatasetValidationError,
    DatasetValidationWarning,
    UnsafePathError,
    UnsupportedImageModeError,
)
from cirbench.data.model_inputs import normalize_images
from cirbench.data.layout import DataLayout, ImageEntry, PublishedCount, Requirement
from cirbench.data.local import ImageIndex, LocalImageDataset
from cirbench.data.locations import DataLocations, dataset_env_var, default_data_root
from cirbench.data.paths import find_inside, list_inside, resolve_under
from cirbench.data.validate import Problem, Validation, validate_dataset

__all__ = [
    "AnnotationError",
    "check_name",
    "json_path",
    "read_json",
    "read_json_records",
    "read_lines",
    "read_text",
    "read_tsv",
    "Availability",
    "CIRDataset",
    "CorruptImageError",
    "DataLayout",
    "DataLocations",
    "DatasetNotAvailable",
    "DatasetContext",
    "DatasetSpec",
    "DatasetValidationError",
    "DatasetValidationWarning",
    "find_inside",
    "list_inside",
    "ImageEntry",
    "ImageIndex",
    "ImageTransform",
    "LocalImageDataset",
    "Problem",
    "PublishedCount",
    "Query",
    "Requirement",
    "Triplet",
    "UnsafePathError",
    "UnsupportedImageModeError",
    "Validation",
    "dataset_env_var",
    "decode_image",
    "display_rgb",
    "default_data_root",
    "normalize_images",
    "resolve_under",
    "validate_dataset",
]
