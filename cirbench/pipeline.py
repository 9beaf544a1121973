"""The training input pipeline: the triplets a run draws -> a :class:`TrainBatch` on the device.

Every batch is what :func:`cirbench.train.make_batch` makes of the same triplets, bit for bit
(the same uint8 pixels, normalised by :func:`cirbench.data.model_inputs.normalize_images`), but
fetched one of two faster ways (:class:`TrainInput` chooses):

* **table on the device**: a dataset that holds its images in memory
  (:attr:`cirbench.CIRDataset.images_in_memory`, the embedded synthetic datasets) and whose
  whole uint8 table fits within :data:`DEVICE_TABLE_BYTES` (on CUDA also within half the
  free memory) is read once, ``images(0 .. N-1)`` (any resizing the dataset does happens
  there, once), and moved to the training device; a batch is then gathered there by index
  and normalised there. Nothing crosses from the host per step but the ids.
* **loader**: any other dataset (image files, decoded once into the Arrow cache of
  :mod:`cirbench.data.cache`) goes through a ``torch.utils.data.DataLoader``: with
  ``workers`` > 0, worker processes call ``dataset.images`` ahead of the step; on CUDA the
  uint8 batches are pinned and copied without blocking, then normalised on the device.
  ``workers=0`` loads in the main thread when the step asks, as before.

The order of the batches is the run's: the loader's sampler replays the run's seeded
generator on a copy (:func:`draws`), so its batches are those the loop draws whatever the
workers' timing, and each one is checked against the triplets the loop drew. The loop's own
generator stays the one that is checkpointed, so resuming is unchanged.
"""

from __future__ import annotations

import copy
import time
from typing import TYPE_CHECKING, Iterable, Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from cirbench import distributed
from cirbench.composer import TrainBatch
from cirbench.data.contract import CIRDataset, Triplet
from cirbench.data.model_inputs import normalize_images

if TYPE_CHECKING:
    from cirbench.protocol import Protocol

#: The largest uint8 image table kept whole on the training device (bytes).
DEVICE_TABLE_BYTES = 4 * 2**30
#: Images read at once while building the table.
_TABLE_CHUNK = 4096


def batch_from_images(
    triplets: Sequence[Triplet], references: torch.Tensor, targets: torch.Tensor,
    device: torch.device | str, channels_last: bool = False, protocol: "Protocol | None" = None,
) -> TrainBatch:
    """The :class:`TrainBatch` of ``triplets`` from their uint8 images ``[B, 3, S, S]``
    (``references``, ``targets``: on the host or already on ``device``), normalised on
    ``device`` with the ``protocol``'s ``image_mean`` / ``image_std`` (None: the protocol
    defaults); ``channels_last`` gives the image tensors that memory format (same values)."""
    ref = normalize_images(references, device, protocol)
    tgt = normalize_images(targets, device, protocol)
    if channels_last:
        ref = ref.contiguous(memory_format=torch.channels_last)
        tgt = tgt.contiguous(memory_format=torch.channels_last)
    return TrainBatch(
        reference_images=ref,
        texts=[t.text for t in triplets],
        target_images=tgt,
        reference_ids=torch.tensor([t.reference for t in triplets], dtype=torch.long, device=device),
        target_ids=torch.tensor([t.target for t in triplets], dtype=torch.long, device=device),
    )


def draws(dataset: CIRDataset, rng: np.random.Generator, batch_size: int, steps: int) -> Iterator[list[Triplet]]:
    """This rank's slice of each of the next ``steps`` global batches drawn from ``rng``
    (exactly the calls of the training loop; pass a copy of the loop's generator)."""
    for _ in range(steps):
        yield distributed.shard(dataset.sample_triplets(rng, batch_size))


def _key(triplets: Sequence[Triplet]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    return tuple(int(t.reference) for t in triplets), tuple(int(t.target) for t in triplets)


class _KeySampler(Sampler):
    """Yields ``(reference ids, target ids)`` of each drawn batch, in the run's order."""

    def __init__(self, batches: Iterable[list[Triplet]]) -> None:
        self.batches = batches

    def __iter__(self):
        for triplets in self.batches:
            yield _key(triplets)


class _PairImages(Dataset):
    """``dataset[(refs, tgts)]`` -> ``(key, uint8 references, uint8 targets)`` (in a worker)."""

    def __init__(self, dataset: CIRDataset) -> None:
        self.dataset = dataset

    def __getitem__(self, key):
        refs, tgts = key
        return key, self.dataset.images(list(refs)), self.dataset.images(list(tgts))


def image_table(dataset: CIRDataset, device: torch.device | str) -> torch.Tensor:
    """Every image of ``dataset`` as one uint8 ``[N, 3, S, S]`` tensor on ``device``
    (``dataset.images`` in chunks of 4096)."""
    n = dataset.num_images
    parts = [dataset.images(range(s, min(n, s + _TABLE_CHUNK))).to(device) for s in range(0, n, _TABLE_CHUNK)]
    return torch.cat(parts) if len(parts) > 1 else parts[0]


def table_fits(dataset: CIRDataset, image_size: int, device: torch.device) -> bool:
    """Whether ``dataset``'s whole uint8 table (``N x 3 x S x S`` bytes) may live on
    ``device``: the dataset holds its images in memory and the table is within
    :data:`DEVICE_TABLE_BYTES` (on CUDA also within half the device's free memory)."""
    if not getattr(dataset, "images_in_memory", False):
        return False
    size = dataset.num_images * 3 * image_size * image_size
    if size > DEVICE_TABLE_BYTES:
        return False
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return size <= free // 2
    return True


class TrainInput:
    """Batches for the training loop (see the module docstring).

    Args:
        dataset: the run's dataset.
        device: the training device.
        image_size: the protocol's image size (to size the table).
        rng: the loop's generator, in the state of the next draw (copied, never advanced here).
        batch_size: the protocol's (global) batch size.
        steps: how many batches the loop will ask for.
        workers: loader worker processes (0: the main thread); unused for a table.
        channels_last: give the image tensors ``torch.channels_last`` memory format.
        table: force (True) or forbid (False) the table on the device; None: :func:`table_fits`.
        protocol: the run's protocol, whose ``image_mean`` / ``image_std`` normalise the
            images (None: the protocol defaults).

    :meth:`batch` returns the batch of the triplets the loop drew; ``wait_seconds`` sums the
    time the loop spent in it (waiting on data) and ``mode`` is ``"device-table"`` or
    ``"loader"``. Use it as a context manager (or call :meth:`close`) so workers end.
    """

    def __init__(
        self, dataset: CIRDataset, device: torch.device | str, image_size: int, rng: np.random.Generator,
        batch_size: int, steps: int, workers: int = 0, channels_last: bool = False, table: bool | None = None,
        protocol: "Protocol | None" = None,
    ) -> None:
        if workers < 0:
            raise ValueError(f"workers must be >= 0, got {workers}")
        self.dataset = dataset
        self.device = torch.device(device)
        self.channels_last = channels_last
        self.protocol = protocol
        self.workers = workers
        self.wait_seconds = 0.0
        use_table = table_fits(dataset, image_size, self.device) if table is None else table
        self._table: torch.Tensor | None = None
        self._iter = None
        self._loader = None
        if use_table:
            self.mode = "device-table"
            self._table = image_table(dataset, self.device)
        else:
            self.mode = "loader"
            self._loader = DataLoader(
                _PairImages(dataset),
                sampler=_KeySampler(draws(dataset, copy.deepcopy(rng), batch_size, steps)),
                batch_size=None,
                num_workers=workers,
                pin_memory=self.device.type == "cuda",
                prefetch_factor=2 if workers else None,
                # its own generator: the loader's seed draw must not advance torch's global
                # generator, which the run's dropout and negative sampling use
                generator=torch.Generator().manual_seed(0),
            )
            self._iter = iter(self._loader)

    def batch(self, triplets: Sequence[Triplet]) -> TrainBatch:
        """The :class:`TrainBatch` of ``triplets`` (the loop's draw). With the loader, raises
        ``RuntimeError`` if its next batch is not of these triplets."""
        t0 = time.perf_counter()
        try:
            if self._table is not None:
                refs, tgts = _key(triplets)
                idx = torch.tensor(refs + tgts, dtype=torch.long, device=self.device)
                images = self._table.index_select(0, idx)
                b = len(refs)
                return batch_from_images(triplets, images[:b], images[b:], self.device, self.channels_last,
                                         self.protocol)
            try:
                key, ref, tgt = next(self._iter)
            except StopIteration:
                raise RuntimeError("input pipeline: the loop asked for more batches than it announced") from None
            if tuple(map(tuple, key)) != _key(triplets):
                raise RuntimeError("input pipeline out of step with the training loop: the loader's "
                                   "batch is not the one the run's generator drew")
            return batch_from_images(triplets, ref, tgt, self.device, self.channels_last, self.protocol)
        finally:
            self.wait_seconds += time.perf_counter() - t0

    def close(self) -> None:
        """End the loader's workers (if any)."""
        self._iter = None
        self._loader = None
        self._table = None

    def __enter__(self) -> "TrainInput":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
