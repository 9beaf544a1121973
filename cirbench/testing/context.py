"""The check context: the protocol, the registry and the inputs that every check builds from.

A :class:`CheckContext` is shared by the checks of one run: it loads the registry once, keeps
built datasets, owns a temporary cache folder (removed when the context is collected) and
makes the inputs composer checks feed in (query images and texts, training batches), all from
fixed seeds so every run sees the same data.
"""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
import weakref
from pathlib import Path

import numpy as np
import torch

from cirbench.build import build_composer, build_dataset, composer_context
from cirbench.composer import Composer, ComposerContext, ComposerSpec, ComposerTypeError, TrainBatch
from cirbench.data.contract import CIRDataset, DatasetSpec, DatasetTypeError
from cirbench.data.model_inputs import normalize_images
from cirbench.data.errors import DatasetNotAvailable
from cirbench.data.locations import DataLocations
from cirbench.plugins import Registry, load_registry
from cirbench.protocol import BUILTIN_PROTOCOLS, Protocol
from cirbench.testing.base import CheckFailed, SkipCheck
from cirbench.testing.random_data import RandomDataset
from cirbench.train import make_batch

#: The embedding size of :func:`default_check_protocol` (small: checks are about contracts).
CHECK_EMBED_DIM = 32
#: Training batches of the checks (at least 2: the soft triplet loss needs a negative).
CHECK_BATCH_SIZE = 4


def default_check_protocol() -> Protocol:
    """The protocol checks run under by default: ``smoke`` (tiny data, resnet18 without
    pretrained weights) with a 32-wide embedding and training batches of 4, named
    ``smoke-check``."""
    smoke = next(p for p in BUILTIN_PROTOCOLS if p.name == "smoke")
    return dataclasses.replace(
        smoke,
        name="smoke-check",
        description="smoke with a 32-wide embedding and batches of 4: for conformance checks",
        embed_dim=CHECK_EMBED_DIM,
        batch_size=CHECK_BATCH_SIZE,
    )


class CheckContext:
    """Everything the checks of one run share.

    Args:
        protocol: a :class:`~cirbench.Protocol`, the name of a registered one, or None for
            :func:`default_check_protocol`.
        registry: where names are looked up; None: :func:`cirbench.plugins.load_registry`
            (loaded on first use).
        cache_dir: the folder datasets and composers may cache in; None: a temporary folder,
            removed when the context is garbage-collected.
        device: where composer checks run (``check_cpu`` and ``check_cuda`` pick their own).
        dataset: what composer checks train on: a :class:`~cirbench.CIRDataset`, the name of
            a registered dataset, or None for a :class:`RandomDataset` at the protocol's image
            size.
        data: where datasets read from a local folder live (None: from the environment;
            see :mod:`cirbench.data.locations`).
    """

    def __init__(
        self,
        protocol: Protocol | str | None = None,
        registry: Registry | None = None,
        cache_dir: str | Path | None = None,
        device: str = "cpu",
        dataset: CIRDataset | str | None = None,
        data: DataLocations | None = None,
    ) -> None:
        self._protocol = protocol
        self._registry = registry
        self._cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.device = device
        self._train_on = dataset
        self.data = data
        self._datasets: dict[DatasetSpec, CIRDataset] = {}  # by spec: two specs may share a name
        self._random: RandomDataset | None = None
        self._declared: dict[tuple[str, ComposerSpec | DatasetSpec], dict[str, str]] = {}

    # --- lazily resolved parts ---------------------------------------------------------------
    @property
    def registry(self) -> Registry:
        if self._registry is None:
            self._registry = load_registry()
        return self._registry

    @property
    def protocol(self) -> Protocol:
        if self._protocol is None:
            self._protocol = default_check_protocol()
        elif isinstance(self._protocol, str):
            self._protocol = self.registry.protocol(self._protocol)
        return self._protocol

    @property
    def cache_dir(self) -> Path:
        if self._cache_dir is None:
            self._cache_dir = Path(tempfile.mkdtemp(prefix="cirbench-check-"))
            weakref.finalize(self, shutil.rmtree, str(self._cache_dir), True)
        return self._cache_dir

    # --- specs ---------------------------------------------------------------------------------
    def composer_spec(self, composer: str | ComposerSpec) -> ComposerSpec:
        """The spec of ``composer`` (a spec is returned as it is)."""
        return composer if isinstance(composer, ComposerSpec) else self.registry.composer(composer)

    def dataset_spec(self, dataset: str | DatasetSpec) -> DatasetSpec:
        """The spec of ``dataset`` (a spec is returned as it is)."""
        return dataset if isinstance(dataset, DatasetSpec) else self.registry.dataset(dataset)

    # --- datasets ------------------------------------------------------------------------------
    def build_dataset(self, dataset: str | DatasetSpec) -> CIRDataset:
        """``dataset`` built under the protocol into the cache folder (once per context). A
        local dataset that is not available under :attr:`data` raises :class:`SkipCheck`."""
        spec = self.dataset_spec(dataset)
        if spec not in self._datasets:
            try:
                # each check reports on its own, so the dataset is built unvalidated
                ds = build_dataset(spec, self.protocol, self.cache_dir / "datasets", self.data, validate=False)
            except DatasetNotAvailable as exc:  # a local dataset that is not here: nothing to check
                raise SkipCheck(f"dataset {spec.name!r} is not available here ({exc.reason}); "
                                "point --data-root or --data at a copy to check it") from exc
            except DatasetTypeError as exc:
                raise CheckFailed(str(exc)) from exc
            self._datasets[spec] = ds
        return self._datasets[spec]

    def train_dataset(self) -> CIRDataset:
        """The dataset composer checks take their inputs from."""
        if isinstance(self._train_on, CIRDataset):
            return self._train_on
        if isinstance(self._train_on, str):
            return self.build_dataset(self._train_on)
        if self._random is None:
            self._random = RandomDataset.for_protocol(self.protocol)
        return self._random

    # --- composers -----------------------------------------------------------------------------
    def composer_context(self, base_loss: str | None = None, device: str | None = None) -> ComposerContext:
        """The :class:`~cirbench.ComposerContext` composers are built from
        (:func:`cirbench.build.composer_context` of :meth:`train_dataset`; its base loss
        unless ``base_loss`` is given)."""
        return composer_context(self.protocol, self.train_dataset(), device=device or self.device,
                                cache_dir=self.cache_dir / "composers", base_loss=base_loss)

    def build_composer(
        self,
        composer: str | ComposerSpec,
        *,
        seed: int = 0,
        base_loss: str | None = None,
        device: str | None = None,
    ) -> Composer:
        """``composer`` built on :meth:`train_dataset`, seeded with ``seed``, on ``device``,
        as the runner builds it (:func:`cirbench.build.build_composer`). Raises
        :class:`CheckFailed` when the build returns no Composer."""
        spec = self.composer_spec(composer)
        try:
            return build_composer(spec, self.protocol, self.train_dataset(), device=device or self.device,
                                  cache_dir=self.cache_dir / "composers", seed=seed, base_loss=base_loss)
        except ComposerTypeError as exc:
            raise CheckFailed(str(exc)) from exc

    # --- inputs --------------------------------------------------------------------------------
    def query_inputs(
        self, n: int, *, seed: int = 0, device: str | torch.device | None = None
    ) -> tuple[torch.Tensor, list[str]]:
        """``n`` normalised query images ``[n, 3, S, S]`` and their texts."""
        ds = self.train_dataset()
        rng = np.random.default_rng(seed)
        queries = list(ds.queries())
        picked = [queries[i] for i in rng.integers(0, len(queries), size=n)]
        images = normalize_images(ds.images([q.reference for q in picked]), device or self.device, self.protocol)
        return images, [q.text for q in picked]

    def train_batch(
        self, n: int | None = None, *, seed: int = 0, device: str | torch.device | None = None
    ) -> TrainBatch:
        """A training batch of ``n`` (default: the protocol's batch size) sampled triplets."""
        ds = self.train_dataset()
        triplets = ds.sample_triplets(np.random.default_rng(seed), n or self.protocol.batch_size)
        return make_batch(ds, triplets, device or self.device, self.protocol)

    # --- declarations ----------------------------------------------------------------------------
    def declared_expected_failures(self, kind: str, subject: str | ComposerSpec | DatasetSpec) -> dict[str, str]:
        """The ``conformance_expected_failures`` dict (check name -> reason) that a composer or
        dataset declares, read from its class when the spec's builder is a class, else from a
        built instance (once per context)."""
        spec = self.composer_spec(subject) if kind == "composer" else self.dataset_spec(subject)
        key = (kind, spec)
        if key not in self._declared:
            source: object = spec.build
            if not isinstance(source, type):
                try:
                    if kind == "composer":
                        source = self.build_composer(spec)
                    else:
                        source = self.build_dataset(spec)
                except Exception:  # the checks themselves report a failing build
                    source = None
            declared = getattr(source, "conformance_expected_failures", None) or {}
            self._declared[key] = {str(k): str(v) for k, v in dict(declared).items()}
        return self._declared[key]
