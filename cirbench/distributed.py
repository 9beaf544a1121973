"""Data-parallel training with ``torch.distributed`` (one process per device, e.g. by
``torchrun --nproc-per-node N -m cirbench run ...``).

The rules (applied by :func:`cirbench.train.train` and :class:`cirbench.runner.Runner`):

* The protocol's ``batch_size`` is the **global** batch. Every rank draws the same global
  batch from the run's seeded generator and takes its contiguous slice
  (:func:`shard`); ``batch_size`` must be divisible by the world size.
* Gradients are averaged over the ranks in one place for every composer, automatic or
  manual optimisation alike: a step pre-hook on each optimiser all-reduces the gradients
  of that optimiser's parameters (:func:`average_gradients_before_step`). The composer is
  not wrapped in ``DistributedDataParallel``, so its attributes and its own
  ``training_step`` (SAC's two optimisers) work unchanged.
* The recorded loss parts are the mean over the ranks (:func:`mean_over_ranks`), so every
  rank takes the same divergence decision and the history is the global batch's.
* Rank 0 decides which cells run (claims), writes checkpoints, evaluates and writes results;
  every rank loads a checkpoint, and the parameters and buffers are broadcast from rank 0
  before training (:func:`broadcast_module`).

Losses with in-batch negatives (the soft triplet, batch classification) see the rank's slice
only, as in any DDP metric-learning setup: the averaged gradient is that of the mean of the
per-slice losses, which equals the one-process global-batch gradient only for losses that
are a mean of per-sample terms. BatchNorm uses each rank's slice statistics (no
``SyncBatchNorm``: it does not run on CPU/gloo, and the protocol's numbers are defined by
the one-process run); the running statistics of rank 0 are the ones evaluated and saved.
"""

from __future__ import annotations

import datetime as dt
import os
from typing import Any, Sequence, TypeVar

import torch
import torch.distributed as dist

T = TypeVar("T")

#: How long a rank waits for the others in one collective (rank 0 evaluates while the others
#: wait for the next cell).
TIMEOUT = dt.timedelta(hours=2)


def launched() -> bool:
    """Whether this process was started by ``torchrun`` (or another launcher setting
    ``WORLD_SIZE`` > 1)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def active() -> bool:
    """Whether a process group of more than one process is initialised."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if active() else 0


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    """Whether this process writes files and prints (rank 0, or no process group)."""
    return rank() == 0


def init_from_env(device: str | None) -> torch.device:
    """Initialise the process group from torchrun's environment (``RANK``, ``WORLD_SIZE``,
    ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``) and return this rank's device: CUDA
    device ``LOCAL_RANK`` with the NCCL backend when ``device`` is ``cuda`` (or None and CUDA
    is present), else the CPU with gloo. Raises ``ValueError`` for ``cuda:N`` (torchrun picks
    the device of each rank)."""
    local = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = device == "cuda" or (device is None and torch.cuda.is_available())
    if device not in (None, "cpu", "cuda"):
        raise ValueError(f"--device {device}: under torchrun give cpu or cuda; each rank uses "
                         "cuda:LOCAL_RANK")
    if use_cuda:
        torch.cuda.set_device(local)
        dev = torch.device("cuda", local)
    else:
        dev = torch.device("cpu")
    if not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo", timeout=TIMEOUT)
    return dev


def shard(items: Sequence[T]) -> list[T]:
    """This rank's contiguous slice of the global batch ``items`` (all of it without a
    process group). Raises ``ValueError`` when the batch is not divisible by the world size."""
    n, w = len(items), world_size()
    if n % w:
        raise ValueError(f"the protocol's batch_size {n} is not divisible by the number of "
                         f"processes {w}: the global batch must split evenly over the ranks")
    per = n // w
    r = rank()
    return list(items[r * per:(r + 1) * per])


def all_reduce_mean_(tensors: list[torch.Tensor]) -> None:
    """Replace each tensor by its mean over the ranks, in place (one flat all-reduce per
    device and dtype)."""
    if not active() or not tensors:
        return
    from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors

    groups: dict[tuple, list[torch.Tensor]] = {}
    for t in tensors:
        groups.setdefault((t.device, t.dtype), []).append(t)
    w = world_size()
    for group in groups.values():
        flat = _flatten_dense_tensors(group)
        dist.all_reduce(flat)
        flat /= w
        for t, v in zip(group, _unflatten_dense_tensors(flat, group)):
            t.copy_(v)


def average_gradients(params: list[torch.nn.Parameter]) -> None:
    """Average the gradients of ``params`` over the ranks. A parameter that has a gradient on
    some rank but not on this one gets a zero gradient first, so every rank reduces the same
    tensors; one that has none anywhere keeps ``None`` (the optimiser skips it, as in one
    process)."""
    if not active() or not params:
        return
    has = torch.tensor([p.grad is not None for p in params], dtype=torch.float32)
    if params[0].device.type == "cuda":
        has = has.to(params[0].device)
    dist.all_reduce(has, op=dist.ReduceOp.MAX)
    todo = []
    for p, h in zip(params, has.tolist()):
        if h:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            todo.append(p.grad)
    all_reduce_mean_(todo)


def average_gradients_before_step(optimizer: torch.optim.Optimizer):
    """Register a step pre-hook on ``optimizer`` averaging its parameters' gradients over the
    ranks before every ``step()``; returns the hook handle (``.remove()`` it after training).
    Without a process group nothing is registered and None is returned."""
    if not active():
        return None
    params = [p for g in optimizer.param_groups for p in g["params"]]

    def hook(opt, args, kwargs):
        average_gradients(params)

    return optimizer.register_step_pre_hook(hook)


def mean_over_ranks(values: dict[str, float]) -> dict[str, float]:
    """``values`` (the same keys on every rank) averaged over the ranks."""
    if not active() or not values:
        return values
    keys = sorted(values)
    t = torch.tensor([values[k] for k in keys], dtype=torch.float64)
    if dist.get_backend() == "nccl":
        t = t.cuda()
    dist.all_reduce(t)
    return {k: v / world_size() for k, v in zip(keys, t.tolist())}


def broadcast_module(module: torch.nn.Module) -> None:
    """Copy rank 0's parameters and buffers to every rank."""
    if not active():
        return
    with torch.no_grad():
        for t in [*module.parameters(), *module.buffers()]:
            dist.broadcast(t.data, src=0)


def broadcast_object(obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank (picklable objects)."""
    if not active():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier() -> None:
    if active():
        dist.barrier()
