"""The base class of datasets whose images are files listed by relative path under a root.

A loader for a real dataset subclasses :class:`LocalImageDataset`:

* class attributes: ``name``, ``version`` (bump when the loader changes which pixels or
  records an id gets: it keys the image cache), ``base_loss``, ``layout`` (a
  :class:`~cirbench.data.layout.DataLayout`), ``transform_mode`` (see
  :class:`~cirbench.data.decode.ImageTransform`);
* :meth:`LocalImageDataset.load`: read the annotation files under ``self.root``, register
  each image with ``self.index.add(entry, source_file)`` (which refuses entries that leave the
  root) and fill ``self.triplets``, ``self.test_queries``, ``self.gallery_ids`` (and
  ``self.group_galleries`` for a gallery per query group); list folders with
  :func:`~cirbench.data.paths.list_inside`, so symbolic links follow the rule of
  :mod:`cirbench.data.paths`. :meth:`~cirbench.DatasetSpec.create` validates what ``load``
  built (:mod:`cirbench.data.validate`); raise
  :class:`~cirbench.data.errors.DatasetValidationError` yourself for a reason only the loader
  knows;
* :meth:`LocalImageDataset.dataset_spec` gives the :class:`~cirbench.DatasetSpec` to return
  from the ``cirbench_datasets`` hook.

Images are decoded with the class's transform at the protocol's ``image_size`` and served
from the decoded-image cache (:class:`cirbench.data.cache.ArrowImageCache`) when a cache folder
is given: keyed by the root's real path and the entries, rebuilt when an image file changes,
and an image deleted since the cache was built raises
:class:`~cirbench.data.errors.CorruptImageError` naming it.
Real datasets use their canonical splits at every ``dataset_scale``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from cirbench.data.contract import CIRDataset, DatasetContext, DatasetSpec, Query, Triplet
from cirbench.data.decode import ImageTransform, decode_image
from cirbench.data.cache import ArrowImageCache
from cirbench.data.layout import DataLayout
from cirbench.data.locations import DataLocations
from cirbench.data.paths import normalise_entry, resolve_under


class ImageIndex:
    """Image ids for relative paths under ``root``, in the order they are added.

    :meth:`add` checks every entry with :func:`~cirbench.data.paths.resolve_under` (an entry
    resolving outside the root, by ``..`` or by a symbolic link leading out, raises
    :class:`~cirbench.data.errors.UnsafePathError` naming it, its annotation file and the link)
    and gives an entry added twice its first id.
    """

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)
        self.entries: list[str] = []
        self.files: list[Path] = []
        self.sources: list[str] = []
        self._ids: dict[str, int] = {}
        self._folders: dict = {}  # folder prefix -> real path or OutsideLink (resolve_under's memo)

    def __len__(self) -> int:
        return len(self.entries)

    def add(self, entry: str, source: Path | str) -> int:
        """The id of image ``entry`` (a path relative to the root, as written in the
        annotation file ``source``), registering it on first sight."""
        rel = normalise_entry(entry, source, self.root)
        found = self._ids.get(rel)
        if found is not None:
            return found
        path = resolve_under(self.root, rel, source, self._folders)
        self._ids[rel] = len(self.entries)
        self.entries.append(rel)
        self.files.append(path)
        self.sources.append(str(source))
        return self._ids[rel]

    def get(self, entry: str) -> int | None:
        """The id of ``entry`` if it was added, else None (never raises)."""
        try:
            return self._ids.get(normalise_entry(entry, "<lookup>", self.root))
        except ValueError:
            return None


class LocalImageDataset(CIRDataset):
    """A dataset of image files under a root folder (see the module docstring for the recipe).

    Args:
        root: the dataset's folder (the one its layout describes).
        protocol: fixes ``image_size``.
        cache_dir: where the decoded-image cache goes (None: decode on every access).
    """

    version: int = 1
    layout: DataLayout = DataLayout()
    transform_mode: str = "center_crop"

    def __init__(self, root: Path | str, protocol, cache_dir: Path | str | None = None) -> None:
        self.root = Path(root)
        self.protocol = protocol
        self.transform = ImageTransform(protocol.image_size, self.transform_mode)
        self.index = ImageIndex(self.root)
        self.triplets: list[Triplet] = []
        self.test_queries: list[Query] = []
        self.gallery_ids = np.zeros(0, dtype=np.int64)
        self.group_galleries: dict[str, np.ndarray] | None = None
        self.load()
        self.gallery_ids = np.asarray(self.gallery_ids, dtype=np.int64)
        self._cache = (
            ArrowImageCache(cache_dir, self.name, self.version, self.transform,
                            self.index.entries, self.index.files, root=self.root)
            if cache_dir is not None else None
        )

    # --- for subclasses ---------------------------------------------------------------------------
    def load(self) -> None:
        """Read the annotation files under ``self.root``; fill ``self.index``,
        ``self.triplets``, ``self.test_queries``, ``self.gallery_ids`` (and
        ``self.group_galleries``). Raise :class:`~cirbench.data.errors.AnnotationError` naming
        the file (and line) for malformed content."""
        raise NotImplementedError(f"{type(self).__name__}.load")

    @classmethod
    def build(cls, ctx: DatasetContext) -> "LocalImageDataset":
        """``DatasetSpec.build``: the dataset from ``ctx.root`` (None: from the environment,
        see :mod:`cirbench.data.locations`), checked against the layout first, at
        ``ctx.protocol``'s image size, its decoded images cached under ``ctx.cache_dir``.
        Raises :class:`~cirbench.data.errors.DatasetNotAvailable` when the folder is missing
        or incomplete."""
        root = ctx.root if ctx.root is not None else cls.layout.root(cls.name, DataLocations())
        cls.layout.check(cls.name, Path(root))
        return cls(root, ctx.protocol, ctx.cache_dir)

    @classmethod
    def dataset_spec(cls, description: str, presets: Sequence[str] = ()) -> DatasetSpec:
        """The :class:`~cirbench.DatasetSpec` a plugin returns from ``cirbench_datasets``
        (``presets``: the protocol presets meant for it, see :class:`~cirbench.DatasetSpec`)."""
        return DatasetSpec(name=cls.name, build=cls.build, description=description, layout=cls.layout,
                           presets=tuple(presets))

    # --- the contract -----------------------------------------------------------------------------
    @property
    def num_images(self) -> int:
        return len(self.index)

    def images(self, ids: Sequence[int]) -> torch.Tensor:
        idx = [int(i) for i in np.asarray(ids, dtype=np.int64).reshape(-1)]
        bad = [i for i in idx if not 0 <= i < self.num_images]
        if bad:
            raise IndexError(f"{self.name}: image ids must be in [0, {self.num_images}), got {bad[:5]}")
        if self._cache is not None:
            arr = self._cache.images(idx)
        else:
            s = self.transform.size
            arr = np.stack([decode_image(self.index.files[i], self.transform) for i in idx]) if idx \
                else np.zeros((0, s, s, 3), dtype=np.uint8)
        return torch.from_numpy(np.array(arr)).permute(0, 3, 1, 2).contiguous()

    def train_triplets(self) -> Sequence[Triplet]:
        return self.triplets

    def queries(self) -> Sequence[Query]:
        return self.test_queries

    def gallery(self, group: str | None = None) -> np.ndarray:
        if group is not None and self.group_galleries is not None:
            if group not in self.group_galleries:
                raise KeyError(f"{self.name}: no gallery for group {group!r}; groups: {sorted(self.group_galleries)}")
            return np.asarray(self.group_galleries[group], dtype=np.int64)
        return self.gallery_ids.copy()

    def has_group_galleries(self) -> bool:
        return self.group_galleries is not None

    def image_origin(self, image_id: int) -> tuple[str, str]:
        """The entry of image ``image_id`` and the annotation file that first listed it."""
        i = int(image_id)
        return self.index.entries[i], self.index.sources[i]

    def image_file(self, image_id: int) -> Path:
        return self.path_of(image_id)

    def describe(self) -> dict:
        d = super().describe()
        d.update(loader_version=self.version, transform=self.transform.key, root=str(self.root))
        return d

    # --- helpers ----------------------------------------------------------------------------------
    def path_of(self, image_id: int) -> Path:
        """The file of image ``image_id``."""
        return self.index.files[int(image_id)]
