"""Building what a run needs, in one place: a dataset from its spec, a composer from its spec
and the dataset it trains on.

The runner (:mod:`cirbench.runner`), the conformance suite (:mod:`cirbench.testing.context`)
and ``cirbench attention`` / ``export`` build through these functions, so a composer is
built the same way wherever it is built: its :class:`~cirbench.ComposerContext` made from the
dataset (training texts for a vocabulary, base loss), the global random state seeded, the
builder called, its result checked, the model moved to its device.
"""

from __future__ import annotations

from pathlib import Path

import torch

from cirbench.composer import Composer, ComposerContext, ComposerSpec, ComposerTypeError
from cirbench.data.contract import CIRDataset, DatasetContext, DatasetSpec, DatasetTypeError
from cirbench.data.locations import DataLocations
from cirbench.protocol import Protocol
from cirbench.train import seed_everything


def _named(what: str, provider: str | None) -> str:
    return f"{what} ({provider})" if provider else what


def dataset_context(
    spec: DatasetSpec, protocol: Protocol, cache_dir: Path | str | None, data: DataLocations | None = None
) -> DatasetContext:
    """The :class:`~cirbench.DatasetContext` ``spec`` is built from. For a dataset with a
    ``layout`` its folder is found under ``data`` (None: from the environment, see
    :mod:`cirbench.data.locations`) and checked first: raises
    :class:`~cirbench.data.errors.DatasetNotAvailable` (naming what is missing where) when it
    is not there. An embedded dataset gets ``root=None``."""
    root = None
    if spec.layout is not None:
        root = spec.root(data)
        spec.layout.check(spec.name, root, data)
    return DatasetContext(protocol=protocol, cache_dir=None if cache_dir is None else Path(cache_dir), root=root)


def build_dataset(
    spec: DatasetSpec,
    protocol: Protocol,
    cache_dir: Path | str | None,
    data: DataLocations | None = None,
    *,
    validate: bool = True,
    provider: str | None = None,
) -> CIRDataset:
    """The dataset of ``spec`` built under ``protocol``: ``spec.build(dataset_context(...))``.

    Args:
        spec: the dataset's spec (from the registry, or made by hand).
        protocol: fixes the dataset's scale and image size.
        cache_dir: the folder the dataset may cache in (None: no cache).
        data: where local datasets live (None: from the environment).
        validate: run :func:`cirbench.data.validate.validate_dataset` on the result (the
            runner's way): errors (no triplets, no queries, no query answerable, a gallery
            listing an image twice, ids out of range) raise
            :class:`~cirbench.data.errors.DatasetValidationError` naming each file and entry;
            some unanswerable queries give a
            :class:`~cirbench.data.errors.DatasetValidationWarning`. The conformance suite
            builds with ``validate=False`` and reports each check on its own.
        provider: who provides the dataset (plugin and distribution), added to the error
            messages.

    Raises:
        DatasetNotAvailable: a local dataset's folder is missing or incomplete.
        DatasetTypeError: the build returned anything but a :class:`~cirbench.CIRDataset`.
    """
    ctx = dataset_context(spec, protocol, cache_dir, data)
    ds = spec.build(ctx)
    if not isinstance(ds, CIRDataset):
        raise DatasetTypeError(_named(
            f"dataset {spec.name!r}: build(ctx) returned {type(ds).__name__}, expected a cirbench.CIRDataset",
            provider))
    if validate:
        from cirbench.data.validate import check_dataset_or_raise

        check_dataset_or_raise(ds, spec.name, spec.layout, ctx.root)
    return ds


def composer_context(
    protocol: Protocol,
    dataset: CIRDataset,
    *,
    device: str | torch.device = "cpu",
    cache_dir: Path | str | None = None,
    base_loss: str | None = None,
    dataset_name: str | None = None,
) -> ComposerContext:
    """The :class:`~cirbench.ComposerContext` a composer is built from: the protocol, every
    training text of ``dataset`` (for a vocabulary), its base loss (unless ``base_loss`` is
    given) and name (unless ``dataset_name`` is given: the registry's name), ``device`` (as
    a string) and ``cache_dir``."""
    return ComposerContext(
        protocol=protocol,
        train_texts=dataset.train_texts(),
        base_loss=base_loss or dataset.base_loss,
        dataset=dataset.name if dataset_name is None else dataset_name,
        device=str(device),
        cache_dir=None if cache_dir is None else Path(cache_dir),
    )


def build_composer(
    spec: ComposerSpec,
    protocol: Protocol,
    dataset: CIRDataset,
    *,
    device: str | torch.device = "cpu",
    cache_dir: Path | str | None = None,
    seed: int | None = None,
    base_loss: str | None = None,
    dataset_name: str | None = None,
    provider: str | None = None,
) -> Composer:
    """The composer of ``spec``, untrained, on ``device``, as a run builds it.

    Makes its context (:func:`composer_context`), seeds every random generator with
    ``seed`` (:func:`cirbench.train.seed_everything`, so the initial weights are the run's;
    None: left as they are), calls ``spec.build(ctx)`` and moves the model to ``device``.

    Raises:
        ComposerTypeError: the build returned anything but a :class:`~cirbench.Composer`
            (the message names the composer, and ``provider`` when given).
    """
    ctx = composer_context(protocol, dataset, device=device, cache_dir=cache_dir, base_loss=base_loss,
                           dataset_name=dataset_name)
    if seed is not None:
        seed_everything(seed)
    model = spec.build(ctx)
    if not isinstance(model, Composer):
        raise ComposerTypeError(_named(
            f"composer {spec.name!r}: build(ctx) returned {type(model).__name__}, expected a cirbench.Composer",
            provider))
    return model.to(device)
