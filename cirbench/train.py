"""The training loop: optimisers from the composer, the protocol's budget and schedule,
named loss parts, divergence detection and checkpoints that let an interrupted run resume.

Everything random in a run (batch sampling, dropout, initialisation, the soft triplet's
negative sampling) is drawn from generators seeded by :func:`seed_everything`, so two CPU
runs with the same seed give identical numbers. A resumed run restores every generator's
state from its checkpoint and continues exactly where it stopped.
"""

from __future__ import annotations

import contextlib
import logging
import math
import numbers
import os
import pickle
import random
import time
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch

from cirbench import distributed
from cirbench.composer import Composer, TrainBatch
from cirbench.data.contract import CIRDataset
from cirbench.pipeline import TrainInput, batch_from_images
from cirbench.progress import progress_bar
from cirbench.protocol import Protocol
from cirbench.results import TrainStats
from cirbench.storage import atomic_write_bytes

log = logging.getLogger(__name__)

#: Loss parts are averaged over windows so the history has at most this many points.
HISTORY_POINTS = 50
#: Without an explicit step interval a run is checkpointed this many times over its budget,
#: so that every protocol's runs resume, however short (``smoke``: 4 steps) or long.
CHECKPOINTS_PER_RUN = 10
#: ... and also whenever this many seconds have passed since the last checkpoint.
CHECKPOINT_SECONDS = 300.0


def checkpoint_interval(iterations: int, every: int | None = None) -> int:
    """Steps between checkpoints: ``every`` when given (>= 1), else a tenth of the budget
    (at least 1)."""
    if every is not None:
        if every < 1:
            raise ValueError(f"checkpoint interval must be >= 1 step, got {every}")
        return every
    return max(1, math.ceil(iterations / CHECKPOINTS_PER_RUN))


class DivergedError(FloatingPointError):
    """The training loss became NaN or infinite."""

    def __init__(self, step: int, parts: dict[str, float]) -> None:
        self.step = step
        self.parts = parts
        super().__init__(f"non-finite loss at step {step}: {parts}")


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def make_batch(dataset: CIRDataset, triplets, device: torch.device | str,
               protocol: Protocol | None = None) -> TrainBatch:
    """Load and normalise the images of ``triplets`` into a :class:`TrainBatch` (on the
    calling thread; the definition of a batch that :class:`cirbench.pipeline.TrainInput`
    reproduces bit for bit, faster), normalised with the ``protocol``'s image statistics
    (None: the protocol defaults)."""
    return batch_from_images(triplets, dataset.images([t.reference for t in triplets]),
                             dataset.images([t.target for t in triplets]), device, protocol=protocol)


#: The autocast dtype of each value of the protocol's ``precision`` field
#: (:data:`cirbench.protocol.PRECISIONS`; None: no autocast, float32 throughout).
AUTOCAST_DTYPES = {"fp32": None, "bf16": torch.bfloat16}


def autocast(precision: str, device: torch.device | str) -> contextlib.AbstractContextManager:
    """The context the forward passes of training run in under the protocol's ``precision``:
    nothing for ``fp32``; ``torch.autocast`` to bfloat16 on the device's type (CUDA or CPU)
    for ``bf16``. Raises ``ValueError`` for another value."""
    if precision not in AUTOCAST_DTYPES:
        raise ValueError(f"precision must be one of {', '.join(AUTOCAST_DTYPES)}, got {precision!r}")
    dtype = AUTOCAST_DTYPES[precision]
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=dtype)


def compile_composer(composer: Composer, backend: str = "inductor") -> list[str]:
    """``torch.compile`` every direct submodule of ``composer`` in place
    (``nn.Module.compile``: parameter names, ``state_dict`` and checkpoints are unchanged);
    returns the compiled submodules' names. The numbers may differ from an uncompiled run in
    the last bits (fused kernels), as between two devices."""
    names = []
    for name, child in composer.named_children():
        child.compile(backend=backend)
        names.append(name)
    return names


def _part_values(parts, where: str, device: torch.device) -> dict[str, float]:
    """The loss parts ``parts`` as floats, averaged over the ranks. A part that is neither a
    scalar tensor nor (from a manual ``training_step``) a real number, or a tensor on another
    device than the composer's, raises ``TypeError`` / ``ValueError`` naming it."""
    if not isinstance(parts, Mapping) or not parts:
        raise TypeError(f"{where} returned {type(parts).__name__}, expected a non-empty dict "
                        "of named scalar loss parts")
    values = {}
    for k, v in parts.items():
        if torch.is_tensor(v):
            if v.numel() != 1:
                raise TypeError(f"{where}: loss part {k!r} has shape {tuple(v.shape)}, expected a scalar")
            if v.device.type != device.type:
                raise ValueError(f"{where}: loss part {k!r} is on {v.device}, the composer on {device}")
            values[k] = float(v.detach())
        elif isinstance(v, numbers.Real) and not isinstance(v, bool):
            values[k] = float(v)
        else:
            raise TypeError(f"{where}: loss part {k!r} is a {type(v).__name__}, expected a scalar tensor")
    return distributed.mean_over_ranks(values)


def train_step(
    composer: Composer,
    batch: TrainBatch,
    optimizers: Sequence[torch.optim.Optimizer],
    schedulers: Sequence = (),
    step: int = 0,
    precision: str = "fp32",
) -> dict[str, float]:
    """One training step, the only implementation of it (the loop of :func:`train` and the
    conformance checks take it): ``composer.on_train_step_start(step)``; then, with automatic
    optimisation, ``training_loss(batch)``, the divergence check, ``zero_grad`` of every
    optimiser, ``backward`` of the summed parts and every optimiser's ``step``; with
    ``automatic_optimization = False`` the composer's own ``training_step(batch, optimizers,
    step)`` and the divergence check; finally every scheduler's ``step``. The forward pass
    (``training_loss``, or the whole manual ``training_step``) runs under
    :func:`autocast` of ``precision`` (the protocol's); the backward pass outside it.

    Under ``torch.distributed`` the returned parts are the mean over the ranks, so every rank
    takes the same divergence decision. The composer must be in training mode.

    Returns the named loss parts as floats. Raises :class:`DivergedError` when a part is not
    finite (with automatic optimisation before any parameter changes), ``TypeError`` when a
    part is not a scalar, ``ValueError`` when it lies on another device than the composer.
    """
    composer.on_train_step_start(step)
    device = torch.device(composer.device)
    if composer.automatic_optimization:
        with autocast(precision, device):
            parts = composer.training_loss(batch)
        values = _part_values(parts, "training_loss", device)
        if not all(math.isfinite(v) for v in values.values()):  # every rank decides alike
            raise DivergedError(step, values)
        for opt in optimizers:
            opt.zero_grad(set_to_none=True)
        sum(parts.values()).backward()
        for opt in optimizers:
            opt.step()
    else:
        with autocast(precision, device):
            parts = composer.training_step(batch, list(optimizers), step)
        values = _part_values(parts, "training_step", device)
        if not all(math.isfinite(v) for v in values.values()):
            raise DivergedError(step, values)
    for sch in schedulers:
        sch.step()
    return values


def _schedulers(optimizers, protocol: Protocol):
    if not protocol.lr_decay_every:
        return []
    return [
        torch.optim.lr_scheduler.StepLR(opt, protocol.lr_decay_every, protocol.lr_decay_factor)
        for opt in optimizers
    ]


def _rng_state(rng: np.random.Generator) -> dict:
    """Every generator's state, in types ``torch.load(weights_only=True)`` accepts (numpy's
    global MT19937 key array as a list of ints)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy_global": [kind, keys.tolist(), int(pos), int(has_gauss), float(cached)],
        "numpy": rng.bit_generator.state,
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def _restore_rng_state(rng: np.random.Generator, state: dict) -> None:
    random.setstate(state["python"])
    kind, keys, pos, has_gauss, cached = state["numpy_global"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    rng.bit_generator.state = state["numpy"]
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def train(
    composer: Composer,
    dataset: CIRDataset,
    protocol: Protocol,
    seed: int,
    checkpoint: Path | None = None,
    checkpoint_every: int | None = None,
    stop_after: int | None = None,
    checkpoint_seconds: float | None = CHECKPOINT_SECONDS,
    workers: int = 0,
    compile: bool = False,
) -> TrainStats:
    """Train ``composer`` on ``dataset`` for ``protocol.iterations`` steps.

    With ``checkpoint``, the state is saved there atomically every ``checkpoint_every`` steps
    (default: :func:`checkpoint_interval`, a tenth of the budget) and whenever
    ``checkpoint_seconds`` have passed since the last save (None: no time rule); training
    resumes from it when it exists. ``stop_after`` ends training early after that many steps
    (for tests of resuming; the checkpoint is written first).
    Raises :class:`DivergedError` when the summed loss is not finite.

    Under ``torch.distributed`` (see :mod:`cirbench.distributed`) ``protocol.batch_size`` is
    the global batch: every rank draws it and trains on its slice, gradients are averaged
    before each optimiser step, the recorded losses are the ranks' mean, and only rank 0
    writes checkpoints (every rank loads them).

    Speed (never the numbers on the CPU): batches come from :class:`cirbench.pipeline.TrainInput`
    (the image table on the device for in-memory datasets, else a ``DataLoader`` with
    ``workers`` processes); the forward passes run under the protocol's ``precision``
    (:func:`autocast`); on CUDA the composer and its inputs use ``channels_last`` and cuDNN
    picks its algorithms (``cudnn.benchmark``); ``compile`` applies
    :func:`compile_composer`. What was used is recorded in ``TrainStats.setup``, with the
    seconds spent waiting on data.
    """
    device = torch.device(composer.device)
    cuda = device.type == "cuda"
    autocast(protocol.precision, device)  # an unknown precision fails here, before any work
    if cuda:
        torch.backends.cudnn.benchmark = True
        composer.to(memory_format=torch.channels_last)
    compiled = compile_composer(composer) if compile else []
    rng = np.random.default_rng(seed)
    optimizers = composer.configure_optimizers()
    if not optimizers:
        raise ValueError(f"{type(composer).__name__}.configure_optimizers returned no optimiser")
    schedulers = _schedulers(optimizers, protocol)
    start_step, elapsed, sums, counts, history = 0, 0.0, {}, 0, []
    if checkpoint is not None and checkpoint.exists():
        state = load_checkpoint(checkpoint, device)
        composer.load_state_dict(state["model"])
        for opt, s in zip(optimizers, state["optimizers"]):
            opt.load_state_dict(s)
        for sch, s in zip(schedulers, state["schedulers"]):
            sch.load_state_dict(s)
        _restore_rng_state(rng, state["rng"])
        start_step, elapsed = state["step"], state["elapsed"]
        sums, counts, history = state["sums"], state["counts"], state["history"]
        log.info("resuming from %s at step %d", checkpoint, start_step)
    distributed.broadcast_module(composer)  # every rank starts from rank 0's state
    hooks = [distributed.average_gradients_before_step(opt) for opt in optimizers]
    todo = protocol.iterations - start_step if stop_after is None else min(stop_after, protocol.iterations - start_step)
    try:
        with TrainInput(dataset, device, protocol.image_size, rng, protocol.batch_size, max(0, todo),
                        workers=workers, channels_last=cuda, protocol=protocol) as source:
            setup = {"input": source.mode, "workers": workers if source.mode == "loader" else 0,
                     "precision": protocol.precision, "compiled": compiled,
                     "channels_last": cuda, "cudnn_benchmark": cuda}
            return _loop(composer, dataset, protocol, rng, optimizers, schedulers, checkpoint,
                         checkpoint_every, stop_after, checkpoint_seconds,
                         start_step, elapsed, sums, counts, history, source, setup)
    finally:
        for h in hooks:
            if h is not None:
                h.remove()


def _loop(composer, dataset, protocol, rng, optimizers, schedulers, checkpoint, checkpoint_every,
          stop_after, checkpoint_seconds, start_step, elapsed, sums, counts, history, source,
          setup) -> TrainStats:

    window = max(1, math.ceil(protocol.iterations / HISTORY_POINTS))
    every = checkpoint_interval(protocol.iterations, checkpoint_every)
    last_save = time.monotonic()
    composer.train()
    last_parts: dict[str, float] = {}
    t0 = time.perf_counter()
    steps = progress_bar(
        range(start_step, protocol.iterations),
        desc="train",
        unit="step",
        initial=start_step,
        total=protocol.iterations,
    )
    step = start_step
    for step in steps:
        triplets = dataset.sample_triplets(rng, protocol.batch_size)  # the global batch
        batch = source.batch(distributed.shard(triplets))
        last_parts = train_step(composer, batch, optimizers, schedulers, step, protocol.precision)
        for k, v in last_parts.items():
            sums[k] = sums.get(k, 0.0) + v
        counts += 1
        if (step + 1) % window == 0 or step + 1 == protocol.iterations:
            history.append({"step": step + 1, **{k: v / counts for k, v in sums.items()}})
            sums, counts = {}, 0
        done = step + 1
        at_stop = stop_after is not None and done - start_step >= stop_after
        due = done % every == 0 or at_stop or (
            checkpoint_seconds is not None and time.monotonic() - last_save >= checkpoint_seconds)
        if checkpoint is not None and done < protocol.iterations and due and distributed.is_main():
            _save_checkpoint(
                checkpoint, composer, optimizers, schedulers, rng, done,
                elapsed + time.perf_counter() - t0, sums, counts, history,
            )
            last_save = time.monotonic()
        if at_stop:
            break
    seconds = elapsed + time.perf_counter() - t0
    trained = step + 1 - start_step if protocol.iterations > start_step else 0
    final = {k: v for k, v in history[-1].items() if k != "step"} if history else last_parts
    return TrainStats(
        iterations=protocol.iterations,
        seconds=seconds,
        samples_per_second=(protocol.batch_size * (start_step + trained)) / seconds if seconds else 0.0,
        final_loss=final,
        history=history,
        resumed_from=start_step,
        setup={**setup, "data_wait_seconds": source.wait_seconds},
    )


class CheckpointError(RuntimeError):
    """A checkpoint cannot be loaded (not a checkpoint, or it holds objects other than
    tensors and plain values, which are never unpickled)."""


def load_checkpoint(path: Path, device: torch.device | str = "cpu") -> dict:
    """The training state saved at ``path`` by :func:`train`, loaded with
    ``torch.load(weights_only=True)``: tensors, numbers, strings and containers only, never
    arbitrary pickled objects. Raises :class:`CheckpointError` naming the file otherwise."""
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError) as exc:
        raise CheckpointError(
            f"checkpoint {path} cannot be loaded safely (only tensors and plain values are "
            f"accepted): {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}; delete it "
            "(or run with --force) to start the run over") from exc
    missing = [k for k in _CHECKPOINT_KEYS if not isinstance(state, dict) or k not in state]
    if missing:
        raise CheckpointError(f"checkpoint {path} is not a cirbench training checkpoint "
                              f"(missing {', '.join(missing)}); delete it (or run with --force)")
    return state


_CHECKPOINT_KEYS = ("step", "elapsed", "model", "optimizers", "schedulers", "rng", "sums", "counts", "history")


def _save_checkpoint(path, composer, optimizers, schedulers, rng, step, elapsed, sums, counts, history):
    import io

    buf = io.BytesIO()
    torch.save(
        {
            "step": step,
            "elapsed": elapsed,
            "model": composer.state_dict(),
            "optimizers": [o.state_dict() for o in optimizers],
            "schedulers": [s.state_dict() for s in schedulers],
            "rng": _rng_state(rng),
            "sums": sums,
            "counts": counts,
            "history": history,
        },
        buf,
    )
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    atomic_write_bytes(Path(path), buf.getvalue())
