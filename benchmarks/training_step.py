"""A training step against its floor, and the time it waits on data, old input path vs new.

In one process, on the protocol's shapes and a real dataset (css-synth at the protocol's
scale), each row times training steps of one composer (default ``tirg``):

* ``old``: the main-thread path as it was, :func:`cirbench.train.make_batch` (``dataset.images``
  then normalisation, per step) + :func:`cirbench.train.train_step`;
* ``table``: :class:`cirbench.pipeline.TrainInput` with the image table on the device (what
  ``train`` uses for in-memory datasets);
* ``loader, N workers``: the same dataset forced through the ``DataLoader`` path that datasets
  read from files take (``--workers``), to see its overhead;

and, interleaved with them, the **floor**: a bare forward + backward (+ SGD step) of the same
reference and target images (``2 x batch``, one pass) through the protocol's backbone, the
least any composer that trains its backbone on both sides must do. Columns: step / floor (the
median over repeats of the per-repeat ratio), the fraction of step time spent fetching the
batch (data wait / step), and steps per second. On CUDA every timing ends with a
synchronisation; rows with ``--precision bf16`` are added when asked.

    python benchmarks/training_step.py                       # CPU (or CUDA when present), quick
    python benchmarks/training_step.py --steps 5 --repeats 3 --device cpu
    python benchmarks/training_step.py --device cuda --precision fp32 bf16 --compile

Figures depend on the machine and its load; read the ratios of one run.
"""

from __future__ import annotations

import argparse
import dataclasses
import platform
import statistics
import sys
import time

import numpy as np
import torch
from tabulate import tabulate

from cirbench.cli.options import default_cache_dir
from cirbench.composer import ComposerContext
from cirbench.encoders.image import build_image_backbone
from cirbench.pipeline import TrainInput
from cirbench.plugins import load_registry
from cirbench.provenance import describe_device, resolve_device
from cirbench.train import autocast, compile_composer, make_batch, seed_everything, train_step


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class _Path:
    """One way of running steps: fetch a batch, take a step; times both."""

    def __init__(self, label, dataset, composer, protocol, device, fetch) -> None:
        self.label, self.dataset, self.composer, self.protocol, self.device = label, dataset, composer, protocol, device
        self.fetch = fetch
        self.opts = composer.configure_optimizers()
        self.rng = np.random.default_rng(0)
        self.step_no = 0

    def run(self, steps: int) -> tuple[float, float]:
        """(seconds per step, seconds per step fetching the batch)."""
        fetch_s = total = 0.0
        for _ in range(steps):
            _sync(self.device)
            t0 = time.perf_counter()
            batch = self.fetch(self.dataset.sample_triplets(self.rng, self.protocol.batch_size))
            _sync(self.device)
            t1 = time.perf_counter()
            train_step(self.composer, batch, self.opts, (), self.step_no, self.protocol.precision)
            _sync(self.device)
            t2 = time.perf_counter()
            fetch_s += t1 - t0
            total += t2 - t0
            self.step_no += 1
        return total / steps, fetch_s / steps


def _floor(protocol, device, channels_last: bool):
    """A bare forward + backward + SGD step of 2 x batch images through the backbone."""
    backbone = build_image_backbone(protocol).to(device)
    if channels_last:
        backbone = backbone.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(backbone.parameters(), lr=0.01)
    s = protocol.image_size
    images = torch.randn(2 * protocol.batch_size, 3, s, s, generator=torch.Generator().manual_seed(0)).to(device)
    if channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    def step() -> float:
        _sync(device)
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        with autocast(protocol.precision, device):
            out = backbone(images)
        (out.sum() if isinstance(out, torch.Tensor) else sum(o.sum() for o in out)).backward()
        opt.step()
        _sync(device)
        return time.perf_counter() - t0

    return step


def bench(protocol, dataset, composer_name, device, steps, repeats, workers, compile_) -> list[list]:
    reg = load_registry()
    cuda = device.type == "cuda"
    if cuda:
        torch.backends.cudnn.benchmark = True

    def build():
        seed_everything(0)
        ctx = ComposerContext(protocol, dataset.train_texts(), base_loss=dataset.base_loss,
                              dataset=dataset.name, device=str(device))
        comp = reg.composer(composer_name).build(ctx).to(device)
        if cuda:
            comp = comp.to(memory_format=torch.channels_last)
        if compile_:
            compile_composer(comp)
        comp.train()
        return comp

    total_steps = (repeats + 1) * steps
    rng = np.random.default_rng(0)
    table = TrainInput(dataset, device, protocol.image_size, rng, protocol.batch_size, total_steps,
                       channels_last=cuda, table=True)
    loader = TrainInput(dataset, device, protocol.image_size, rng, protocol.batch_size, total_steps,
                        workers=workers, channels_last=cuda, table=False)
    paths = [
        _Path("old: make_batch (main thread)", dataset, build(), protocol, device,
              lambda t: make_batch(dataset, t, device)),
        _Path("new: image table on the device", dataset, build(), protocol, device, table.batch),
        _Path(f"new: DataLoader, {workers} workers", dataset, build(), protocol, device, loader.batch),
    ]
    floor = _floor(protocol, device, cuda)
    floor()
    for p in paths:  # warm-up (allocator, cuDNN autotuning, compilation)
        p.run(steps)
    times = {p.label: [] for p in paths}
    floors = []
    for _ in range(repeats):
        f = statistics.median(floor() for _ in range(steps))
        floors.append(f)
        for p in paths:
            times[p.label].append((p.run(steps), f))
    rows = [[f"floor: bare backbone fwd+bwd of 2 x {protocol.batch_size} images", protocol.precision,
             "1.00", "-", f"{1 / statistics.median(floors):.2f}"]]
    for p in paths:
        ratios = [t / f for (t, _), f in times[p.label]]
        waits = [w / t for (t, w), _ in times[p.label]]
        step_s = statistics.median(t for (t, _), _ in times[p.label])
        rows.append([f"{composer_name} step, {p.label}", protocol.precision, f"{statistics.median(ratios):.2f}",
                     f"{100 * statistics.median(waits):.1f} %", f"{1 / step_s:.2f}"])
    table.close()
    loader.close()
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--protocol", default="quick")
    ap.add_argument("--dataset", default="css-synth")
    ap.add_argument("--composer", default="tirg")
    ap.add_argument("--steps", type=int, default=5, help="steps per timed repeat (default 5)")
    ap.add_argument("--repeats", type=int, default=3, help="interleaved repeats (default 3)")
    ap.add_argument("--workers", type=int, default=2, help="workers of the DataLoader row (default 2)")
    ap.add_argument("--precision", nargs="*", default=None, choices=["fp32", "bf16"],
                    help="protocol precisions to time (default: the protocol's)")
    ap.add_argument("--compile", action="store_true", help="torch.compile the composers (inductor)")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    ap.add_argument("--device", default=None, help="cpu, cuda (default: cuda when present)")
    ap.add_argument("--cache-dir", default=str(default_cache_dir()))
    ap.add_argument("--markdown", default=None, help="also append the table to this file")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    reg = load_registry()
    base = reg.protocol(args.protocol)
    dataset = reg.dataset(args.dataset).create(base, args.cache_dir)
    rows = []
    for precision in args.precision or [base.precision]:
        protocol = dataclasses.replace(base, precision=precision)
        rows += bench(protocol, dataset, args.composer, device, args.steps, args.repeats, args.workers, args.compile)
    head = (f"Training step / floor on {describe_device(device)}; torch {torch.__version__}; python "
            f"{platform.python_version()}; {base.label} (batch {base.batch_size}, {base.image_size} px, "
            f"{base.backbone}) on {args.dataset}; median of {args.repeats} interleaved repeats of "
            f"{args.steps} steps{'; compiled' if args.compile else ''}")
    text = tabulate(rows, headers=["what", "precision", "step / floor", "data wait / step", "steps/s"],
                    tablefmt="github")
    print(head + "\n\n" + text)
    if args.markdown:
        with open(args.markdown, "a") as f:
            f.write("\n" + head + "\n\n" + text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
