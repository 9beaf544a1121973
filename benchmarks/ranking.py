"""Ranking against its hardware floor: ``metrics.rank_queries`` / (float32 product + top-50).

Also the evaluation's path, ``metrics.rank_and_top_k`` with k = 50 (the ranks and the top-50
ids from one pass), against the same floor.

The floor is what any retrieval evaluation must do at least: normalise the embeddings, one
float32 matrix product per chunk of queries and a top-50 per row (``torch.topk``), with the
same chunking (:func:`cirbench.metrics.effective_chunk`) in the same process. The floor is
given every advantage ``rank_queries`` has: the gallery transposed once into a contiguous
``[D, N]`` matrix and one preallocated output buffer.

All are run on the same problem, interleaved (floor, rank, rank + top-50, floor, ...) so that
load from other processes falls on each; the table gives the median over the repeats of the
per-repeat ratio, queries/s of each (median) and the peak memory rise of each (the process's
peak RSS on CPU, the allocator's peak on CUDA).

Problems (``--targets``): ``random`` (the default, the worst case for ``rank_queries``):
Gaussian embeddings, one random target and one random reference per query, so the targets'
scores crowd around 0 with the other entries and the near-tie window that ``rank_queries``
re-scores in float64 holds about ``N * 9 * 2 * score_error_bound(d)`` entries per query (28
at 50k, 56 at 100k); ``near``: each query is its target plus Gaussian noise (cosine about
0.6, as after training), so ranks are small and the window is nearly empty.

    python benchmarks/ranking.py                                   # 10k x 50k and 2k x 100k, 512-d
    python benchmarks/ranking.py --sizes 2000x20000 --repeats 3    # a quick look
    python benchmarks/ranking.py --device cuda

Report ratios; absolute seconds depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time

import torch
import torch.nn.functional as F
from tabulate import tabulate

from cirbench.metrics import effective_chunk, rank_and_top_k, rank_queries
from cirbench.provenance import describe_device, peak_memory_mb, reset_peak_memory, resolve_device


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def floor(queries: torch.Tensor, gallery: torch.Tensor, chunk: int, k: int = 50) -> None:
    """Normalise, then per chunk one float32 product into a reused buffer and a top-k."""
    q = F.normalize(queries, dim=1)
    g_t = F.normalize(gallery, dim=1).t().contiguous()
    buf = torch.empty(chunk, gallery.shape[0], device=gallery.device)
    for s in range(0, q.shape[0], chunk):
        m = min(chunk, q.shape[0] - s)
        torch.mm(q[s : s + m], g_t, out=buf[:m]).topk(min(k, gallery.shape[0]), dim=1)


def measure(fn, device: torch.device) -> tuple[float, float]:
    """(seconds, peak memory rise in MB) of one call."""
    _sync(device)
    reset_peak_memory(device)
    base = peak_memory_mb(device)
    start = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - start, peak_memory_mb(device) - base


def bench(n_q: int, n_g: int, dim: int, chunk: int, repeats: int, device: torch.device, kind: str = "random",
          seed: int = 0) -> list:
    g = torch.Generator().manual_seed(seed)
    gallery = torch.randn(n_g, dim, generator=g)
    queries = torch.randn(n_q, dim, generator=g)
    refs = torch.randint(0, n_g, (n_q,), generator=g).tolist()
    tgt = torch.randint(0, n_g, (n_q,), generator=g)
    targets = [(int(t),) for t in tgt]
    if kind == "near":  # a query is its target plus noise of the same size: cosine about 0.7
        queries = gallery[tgt] + queries
    gallery, queries = gallery.to(device), queries.to(device)
    c = effective_chunk(chunk, n_g)
    run_floor = lambda: floor(queries, gallery, c)  # noqa: E731
    run_rank = lambda: rank_queries(queries, gallery, torch.arange(n_g), refs, targets, chunk=chunk)  # noqa: E731
    run_eval = lambda: rank_and_top_k(queries, gallery, torch.arange(n_g), refs, targets, 50, chunk=chunk)  # noqa: E731
    runs = {"floor": run_floor, "rank": run_rank, "eval": run_eval}
    for run in runs.values():  # warm-up: allocator, BLAS threads
        run()
    times: dict[str, list[float]] = {name: [] for name in runs}
    peaks: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            t, m = measure(run, device)
            times[name].append(t)
            peaks[name].append(m)

    def ratio(name: str) -> tuple[str, str]:
        r = [a / b for a, b in zip(times[name], times["floor"])]
        return f"{statistics.median(r):.2f}", f"{min(r):.2f}-{max(r):.2f}"

    return [
        f"{n_q:,} x {n_g:,} x {dim}",
        kind,
        c,
        *ratio("rank"),
        *ratio("eval"),
        *(f"{n_q / statistics.median(times[name]):,.0f}" for name in runs),
        *(f"{max(peaks[name]):,.0f}" for name in runs),
    ]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", nargs="*", default=["10000x50000", "2000x100000"], help="QUERIESxGALLERY")
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--chunk", type=int, default=1024, help="requested chunk (capped by effective_chunk)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--targets", nargs="*", choices=["random", "near"], default=["random", "near"],
                    help="problems to time (default: both)")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    ap.add_argument("--device", default=None)
    ap.add_argument("--markdown", default=None, help="also append the table to this file")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    rows = []
    for size in args.sizes:
        try:
            n_q, n_g = (int(x) for x in size.lower().split("x"))
        except ValueError:
            ap.error(f"--sizes: {size!r} is not QUERIESxGALLERY (e.g. 10000x50000)")
        for kind in args.targets:
            rows.append(bench(n_q, n_g, args.dim, args.chunk, args.repeats, device, kind))
    head = (f"Ranking / floor on {describe_device(device)}; torch "
            f"{torch.__version__}; python {platform.python_version()}; median of {args.repeats} interleaved repeats")
    table = tabulate(rows, headers=["queries x gallery x d", "targets", "chunk", "rank / floor", "range",
                                    "rank+top-50 / floor", "range", "floor queries/s", "rank queries/s",
                                    "rank+top-50 queries/s", "floor peak rise MB", "rank peak rise MB",
                                    "rank+top-50 peak rise MB"], tablefmt="github")
    print(head + "\n\n" + table)
    if args.markdown:
        with open(args.markdown, "a") as f:
            f.write("\n" + head + "\n\n" + table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
