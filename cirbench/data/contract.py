"""The dataset contract: what every dataset plugin provides.

A dataset is a table of images (integer ids ``0 .. num_images-1``), training triplets and
test queries. Its evaluation rules are data, so the evaluator stays generic:

* label-based hits (CSS, Fashion200k, MIT-States) are several correct ids per query;
* query groups (CSS modification types, FashionIQ categories) are the ``group`` field;
* a per-group gallery is what :meth:`CIRDataset.gallery` returns for that group;
* a per-query candidate list (CIRR's Recall_subset) is :attr:`Query.candidates`.
"""

from __future__ import annotations

import abc
import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np
import torch

if TYPE_CHECKING:
    from cirbench.data.layout import DataLayout
    from cirbench.data.locations import DataLocations
    from cirbench.protocol import Protocol


@dataclass(frozen=True)
class Triplet:
    """One training example: ``reference`` + ``text`` should retrieve ``target``."""

    reference: int
    text: str
    target: int


@dataclass(frozen=True)
class Query:
    """One test query.

    ``targets`` are every gallery id that counts as a correct answer (label-based hits give
    several). ``group`` is the query's group for the per-group breakdown (e.g. ``add``,
    ``remove``, ``change`` on CSS-like data, or a FashionIQ category).

    ``candidates`` (optional) restricts this query's ranking to these ids of its gallery: the
    other gallery entries are left out of its ranking, as the reference is (None: the whole
    gallery). It expresses a per-query candidate list, such as CIRR's Recall_subset@K over the
    members of the query's image set; the gallery is still embedded once.
    """

    reference: int
    text: str
    targets: tuple[int, ...]
    group: str = "all"
    candidates: tuple[int, ...] | None = None


class CIRDataset(abc.ABC):
    """A composed-image-retrieval dataset, already built at the protocol's scale and size.

    Subclasses set :attr:`name` and :attr:`base_loss` and implement the abstract methods.
    ``base_loss`` names the loss the dataset's canonical protocol trains with
    (``"soft_triplet"`` for CSS and MIT-States, ``"batch_classification"`` for the fashion
    datasets; docs/papers.md §2); composers that follow TIRG read it from their context.
    """

    name: str = ""
    base_loss: str = "soft_triplet"
    #: True when :meth:`images` only indexes (and perhaps resizes) a table held in memory, so
    #: the whole table may be read once: training then keeps it on the device
    #: (:mod:`cirbench.pipeline`). False (the default): images are read per batch.
    images_in_memory: bool = False

    @property
    @abc.abstractmethod
    def num_images(self) -> int:
        """Number of images; ids run from 0 to ``num_images - 1``."""

    @abc.abstractmethod
    def images(self, ids: Sequence[int]) -> torch.Tensor:
        """The images ``ids`` as a ``uint8`` tensor ``[len(ids), 3, S, S]``, S the protocol's
        image size, RGB, no normalisation (the engine normalises)."""

    @abc.abstractmethod
    def train_triplets(self) -> Sequence[Triplet]:
        """All training triplets."""

    @abc.abstractmethod
    def queries(self) -> Sequence[Query]:
        """All test queries."""

    @abc.abstractmethod
    def gallery(self, group: str | None = None) -> np.ndarray:
        """Gallery ids (``int64``) for test queries of ``group``; ``None``: the one shared
        gallery. Datasets with a gallery per group (FashionIQ) override this for groups."""

    def has_group_galleries(self) -> bool:
        """True when every query group is ranked against its own gallery."""
        return False

    def train_texts(self) -> list[str]:
        """Every text a composer may see in training (for building a vocabulary)."""
        return sorted({t.text for t in self.train_triplets()})

    def sample_triplets(self, rng: np.random.Generator, n: int) -> list[Triplet]:
        """Draw ``n`` training triplets. Default: uniform with replacement. Datasets whose
        canonical sampler differs (TIRG's CSS pairs samples sharing a reference) override."""
        triplets = self.train_triplets()
        idx = rng.integers(0, len(triplets), size=n)
        return [triplets[i] for i in idx]

    def image_origin(self, image_id: int) -> tuple[str, str]:
        """``(name, file)`` of image ``image_id`` for messages: the entry as an annotation file
        names it and that file. Default: the id and ``""`` (a generated image)."""
        return str(image_id), ""

    def image_file(self, image_id: int) -> "Path | None":
        """The file image ``image_id`` is read from; None for a generated image (default)."""
        return None

    def describe(self) -> dict:
        """Sizes and facts recorded with every result."""
        qs = self.queries()
        groups: dict[str, int] = {}
        for q in qs:
            groups[q.group] = groups.get(q.group, 0) + 1
        return {
            "num_images": self.num_images,
            "num_train_triplets": len(self.train_triplets()),
            "num_queries": len(qs),
            "gallery_size": int(len(self.gallery())),
            "queries_per_group": dict(sorted(groups.items())),
            "base_loss": self.base_loss,
        }


class DatasetTypeError(TypeError):
    """A dataset plugin's ``build`` returned something other than a :class:`CIRDataset`."""


@dataclass(frozen=True)
class Availability:
    """Whether a dataset can be built here: ``ok``, and in words where it is or why not."""

    ok: bool
    detail: str = ""

    def __str__(self) -> str:
        if self.ok:
            return f"available ({self.detail})" if self.detail else "available"
        return f"not found ({self.detail})"


@dataclass(frozen=True)
class DatasetContext:
    """Everything a dataset is built from: what ``DatasetSpec.build(ctx)`` receives.

    Fields:
        protocol: the protocol; the dataset is built at its ``dataset_scale`` and
            ``image_size``.
        cache_dir: a folder the dataset may use to keep generated or decoded data between
            runs (each kind in its own sub-folder, :mod:`cirbench.data.cache`); None: keep
            nothing.
        root: the dataset's local folder, found and checked against its ``layout`` by the
            caller (:func:`cirbench.build.build_dataset`); None for an embedded dataset (one
            with no ``layout``), or when the builder is called directly: a
            :class:`~cirbench.data.LocalImageDataset` then looks in the environment
            (:mod:`cirbench.data.locations`).

    ``cache_dir`` and ``root`` given as strings are made :class:`~pathlib.Path`.
    """

    protocol: "Protocol"
    cache_dir: Path | None = None
    root: Path | None = None

    def __post_init__(self) -> None:  # accept str paths, keep Path fields
        for field in ("cache_dir", "root"):
            value = getattr(self, field)
            if value is not None and not isinstance(value, Path):
                object.__setattr__(self, field, Path(value))


class DatasetBuildSignatureError(TypeError):
    """A dataset plugin's ``build`` still takes the arguments of cirbench before 0.2,
    ``build(protocol, cache_dir)`` or ``build(protocol, cache_dir, root)``, instead of one
    :class:`DatasetContext`."""


def _required_positional(build: Callable) -> int | None:
    """How many positional arguments ``build`` requires (None: its signature is unknown)."""
    try:
        sig = inspect.signature(build)
    except (TypeError, ValueError):  # some builtins and C callables
        return None
    return sum(
        1 for p in sig.parameters.values()
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty
    )


@dataclass(frozen=True)
class DatasetSpec:
    """What a plugin returns from ``cirbench_datasets``: a named dataset and how to build it.

    ``build(ctx)`` receives a :class:`DatasetContext` (``ctx.protocol``, ``ctx.cache_dir``,
    ``ctx.root``) and returns a :class:`CIRDataset` at the protocol's ``dataset_scale`` and
    ``image_size``; ``ctx.cache_dir`` is a folder the dataset may use to keep generated or
    decoded data between runs. A ``build`` that requires more than one positional argument
    (the old ``build(protocol, cache_dir[, root])``) raises
    :class:`DatasetBuildSignatureError` naming the dataset when the spec is made, so the
    registry reports the plugin and its distribution.

    A dataset read from a local folder also gives its ``layout`` (a
    :class:`cirbench.data.layout.DataLayout`: default folder, required files, where it is
    published); its ``build`` then finds the folder checked in ``ctx.root``. Callers build
    through :func:`cirbench.build.build_dataset` (or :meth:`create`, the same), which resolves
    the folder from a :class:`~cirbench.data.locations.DataLocations`, checks the layout
    (raising :class:`~cirbench.data.errors.DatasetNotAvailable`), builds and validates;
    :meth:`availability` answers without building. Embedded datasets (no ``layout``) are
    always available.

    ``presets`` names the protocol presets meant for the dataset, its own first (a real
    dataset's paper-scale ``full-<name>``; an embedded dataset's ``quick``...); ``cirbench
    list`` shows them beside the dataset, and each preset beside its datasets. Empty: the
    plugin says nothing (any protocol may be used).
    """

    name: str
    build: "Callable[[DatasetContext], CIRDataset]"
    description: str = ""
    layout: "DataLayout | None" = None
    presets: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if isinstance(self.presets, str) or not all(isinstance(p, str) for p in self.presets):
            raise TypeError(f"dataset {self.name!r}: presets must be a sequence of protocol names, "
                            f"got {self.presets!r}")
        object.__setattr__(self, "presets", tuple(self.presets))
        required = _required_positional(self.build) if callable(self.build) else None
        if required is not None and required > 1:
            raise DatasetBuildSignatureError(
                f"dataset {self.name!r}: its build {getattr(self.build, '__qualname__', self.build)!r} "
                f"requires {required} positional arguments (the old build(protocol, cache_dir[, root])); "
                "a dataset builder takes one cirbench.DatasetContext: build(ctx), reading "
                "ctx.protocol, ctx.cache_dir and ctx.root"
            )

    def root(self, data: "DataLocations | None" = None) -> "Path | None":
        """The dataset's local folder under ``data`` (None for an embedded dataset)."""
        return None if self.layout is None else self.layout.root(self.name, data)

    def availability(self, data: "DataLocations | None" = None) -> Availability:
        """Whether :meth:`create` can build the dataset (cheap: no decoding)."""
        if self.layout is None:
            return Availability(True, "embedded")
        from cirbench.data.errors import DatasetNotAvailable

        root = self.root(data)
        try:
            self.layout.check(self.name, root, data)
        except DatasetNotAvailable as exc:
            return Availability(False, f"{root}: {exc.reason}")
        return Availability(True, str(root))

    def create(
        self, protocol: "Protocol", cache_dir: "Path | str | None", data: "DataLocations | None" = None,
        validate: bool = True,
    ) -> CIRDataset:
        """The dataset built for a run: ``cirbench.build.build_dataset(self, protocol,
        cache_dir, data, validate=validate)`` (see there for what is checked and raised)."""
        from cirbench.build import build_dataset

        return build_dataset(self, protocol, cache_dir, data, validate=validate)
