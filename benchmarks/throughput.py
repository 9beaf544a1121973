"""Training and evaluation throughput, printed as tables.

Training: samples/s of one optimisation step (batch of the protocol's size, random images,
real css-synth texts) for every registered composer, next to a bare backbone forward+backward
on the same number of images, measured in one process. Evaluation: queries/s and peak memory of
chunked ranking (:func:`cirbench.metrics.rank_queries`) at gallery sizes from 1k to 100k.

    python benchmarks/throughput.py                      # everything, quick protocol
    python benchmarks/throughput.py --only eval --galleries 1000 10000
    python benchmarks/throughput.py --composers concat tirg --steps 5
    python benchmarks/throughput.py --markdown benchmarks/RESULTS.md   # also write the tables

Report ratios from one run; absolute seconds depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time

import torch
from tabulate import tabulate

from cirbench.composer import ComposerContext, TrainBatch
from cirbench.encoders.image import build_image_backbone
from cirbench.metrics import effective_chunk, rank_queries
from cirbench.plugins import load_registry
from cirbench.provenance import describe_device, peak_memory_mb, reset_peak_memory, resolve_device
from cirbench.train import seed_everything, train_step

TEXTS = [
    "add large red cube to top-left",
    "remove yellow sphere",
    "make middle-center small gray object red",
    "change bottom-right large blue cylinder to small",
]


def _time(fn, steps: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    start = time.perf_counter()
    for _ in range(steps):
        fn()
    return (time.perf_counter() - start) / steps


def bench_training(protocol, names, steps, device) -> list[list]:
    reg = load_registry()
    b, s = protocol.batch_size, protocol.image_size
    g = torch.Generator().manual_seed(0)
    images = torch.randn(2 * b, 3, s, s, generator=g).to(device)
    texts = [TEXTS[i % len(TEXTS)] for i in range(b)]
    batch = TrainBatch(images[:b], texts, images[b:], torch.arange(b), torch.arange(b))

    backbone = build_image_backbone(protocol).to(device)
    opt = torch.optim.SGD(backbone.parameters(), lr=0.01)

    def bare():
        opt.zero_grad()
        backbone(images[:b]).sum().backward()
        opt.step()

    bare_s = _time(bare, steps)
    rows = [["bare backbone (1 x batch)", "", f"{b / bare_s:.1f}", "1.00"]]
    for name in names:
        seed_everything(0)
        comp = reg.composer(name).build(ComposerContext(protocol, TEXTS, device=str(device))).to(device)
        comp.train()
        opts = comp.configure_optimizers()

        def step():
            train_step(comp, batch, opts)

        sec = _time(step, steps)
        params = comp.parameter_counts()["total"]
        rows.append([name, f"{params / 1e6:.2f}M", f"{b / sec:.1f}", f"{sec / bare_s:.2f}"])
    return rows


def bench_eval(galleries, num_queries, dim, chunk, device) -> list[list]:
    rows = []
    g = torch.Generator().manual_seed(0)
    for n in galleries:
        gallery = torch.randn(n, dim, generator=g).to(device)
        queries = torch.randn(num_queries, dim, generator=g).to(device)
        refs = torch.randint(0, n, (num_queries,), generator=g).tolist()
        targets = [(int(t),) for t in torch.randint(0, n, (num_queries,), generator=g)]
        reset_peak_memory(device)
        base = peak_memory_mb(device)
        start = time.perf_counter()
        rank_queries(queries, gallery, torch.arange(n), refs, targets, chunk=chunk)
        sec = time.perf_counter() - start
        peak = peak_memory_mb(device)
        full_matrix_mb = num_queries * n * 8 / 2**20
        rows.append([f"{n:,}", num_queries, effective_chunk(chunk, n), f"{num_queries / sec:,.0f}",
                     f"{peak:,.0f}", f"{peak - base:,.0f}", f"{full_matrix_mb:,.0f}"])
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--protocol", default="quick")
    ap.add_argument("--only", choices=["train", "eval"])
    ap.add_argument("--composers", nargs="*", help="default: every registered composer")
    ap.add_argument("--steps", type=int, default=5, help="timed training steps per composer")
    ap.add_argument("--galleries", type=int, nargs="*", default=[1_000, 10_000, 100_000])
    ap.add_argument("--queries", type=int, default=2_000)
    ap.add_argument("--chunk", type=int, default=None, help="default: the protocol's eval_chunk")
    ap.add_argument("--device", default=None)
    ap.add_argument("--markdown", default=None, help="also write the tables to this file")
    args = ap.parse_args(argv)

    reg = load_registry()
    protocol = reg.protocol(args.protocol)
    device = resolve_device(args.device)
    out = [f"Machine: {describe_device(device)}; torch {torch.__version__}; python {platform.python_version()}; "
           f"protocol {protocol.label} (batch {protocol.batch_size}, {protocol.image_size}px, {protocol.backbone})."]
    if args.only in (None, "train"):
        names = args.composers or sorted(reg.composers)
        rows = bench_training(protocol, names, args.steps, device)
        out += ["", "Training throughput (one optimisation step; time ratio against a bare backbone "
                "forward+backward of one batch, same run)", "",
                tabulate(rows, headers=["composer", "params", "samples/s", "step time / bare"], tablefmt="github")]
    if args.only in (None, "eval"):
        rows = bench_eval(args.galleries, args.queries, protocol.embed_dim, args.chunk or protocol.eval_chunk, device)
        out += ["", f"Evaluation: chunked ranking of {args.queries:,} queries ({protocol.embed_dim}-d), "
                "peak memory of the process (MB) and what a full queries x gallery float64 matrix would take", "",
                tabulate(rows, headers=["gallery", "queries", "chunk", "queries/s", "peak MB", "peak rise MB",
                                        "full matrix MB"], tablefmt="github")]
    text = "\n".join(out)
    print(text)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write("# Benchmarks\n\nGenerated by `python benchmarks/throughput.py`.\n\n" + text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
