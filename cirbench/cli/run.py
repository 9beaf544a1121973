"""``cirbench run``: train and evaluate composers on datasets under a protocol, here, under
torchrun (one process per rank) or as submitit jobs (``--launcher``)."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from tabulate import tabulate

from cirbench.claims import STALE_AFTER_SECONDS
from cirbench.cli.options import (
    CliError,
    add_cache_dir_option,
    add_data_options,
    add_device_options,
    add_results_option,
    data_locations,
    device_and_threads,
    int_at_least,
    positive_float,
    select_names,
    split_available,
)
from cirbench.plugins import Registry
from cirbench.protocol import DEFAULT_PROTOCOL
from cirbench.train import CHECKPOINT_SECONDS


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("run", help="train and evaluate composers on datasets under a protocol")
    p.add_argument("--all", action="store_true",
                   help="every composer on every dataset (restricted by --composer/--dataset if given)")
    p.add_argument("--ablations", action="store_true",
                   help="with --all: also the ablation composers (the rows of papers' ablation tables)")
    p.add_argument("--composer", action="append", metavar="NAME", help="a composer (repeatable)")
    p.add_argument("--dataset", action="append", metavar="NAME", help="a dataset (repeatable)")
    p.add_argument("--protocol", default=DEFAULT_PROTOCOL, metavar="NAME",
                   help=f"protocol preset (default: {DEFAULT_PROTOCOL})")
    p.add_argument("--seed", type=int_at_least(0), action="append", metavar="N",
                   help="seed (repeatable; default: the protocol's seeds)")
    add_results_option(p)
    add_cache_dir_option(p)
    add_device_options(p)
    p.add_argument("--force", action="store_true", help="redo runs whose result exists")
    p.add_argument("--workers", type=int_at_least(0), default=0, metavar="N",
                   help="DataLoader worker processes reading images of file datasets (default: 0, the "
                   "main thread); never changes the numbers")
    p.add_argument("--compile", action="store_true", help="torch.compile the composer's submodules")
    p.add_argument("--dry-run", action="store_true", help="print the runs the command would do, run none")
    p.add_argument("--checkpoint-every", type=int_at_least(1), default=None, metavar="STEPS",
                   help="save a resumable checkpoint every so many steps (default: a tenth of the "
                   "protocol's budget, so every protocol's runs resume)")
    p.add_argument("--checkpoint-minutes", type=positive_float, default=CHECKPOINT_SECONDS / 60,
                   metavar="M", help="also save one whenever M minutes have passed since the last "
                   "(default: %(default)g)")
    p.add_argument("--save-model", action="store_true",
                   help="keep each run's trained state_dict beside its result (seed<N>.model.pt; "
                   "large); a finished run without one is run again")
    p.add_argument("--claim-timeout", type=positive_float, default=STALE_AFTER_SECONDS / 60, metavar="M",
                   help="a cell claimed by a runner that has not shown a sign of life (its claim "
                   "file is touched every minute) for M minutes is taken over (default: %(default)g); "
                   "on the same host a claim of a dead process is taken over at once")
    g = p.add_argument_group("cluster jobs (submitit)")
    g.add_argument("--launcher", choices=("local", "slurm"), default=None,
                   help="submit each (protocol, dataset, composer, seed) cell as a job through "
                   "submitit: slurm, or local processes on this machine; waits for them")
    g.add_argument("--launcher-folder", default=None, metavar="DIR",
                   help="submitit's job files and logs (default: <results>/.submitit)")
    g.add_argument("--launcher-config", default=None, metavar="FILE",
                   help="TOML file with the job resources (keys as the --slurm-* options without "
                   "the prefix, e.g. partition = \"gpu\", time = 120, gpus = 1); options override it")
    g.add_argument("--slurm-partition", default=None, metavar="NAME", help="Slurm partition")
    g.add_argument("--slurm-time", type=int_at_least(1), default=None, metavar="MIN",
                   help="time limit of each job in minutes (default: 240)")
    g.add_argument("--slurm-gpus", type=int_at_least(0), default=None, metavar="N",
                   help="GPUs per job (default: 1; --launcher local too)")
    g.add_argument("--slurm-cpus", type=int_at_least(1), default=None, metavar="N", help="CPUs per job (default: 8)")
    g.add_argument("--slurm-mem", type=int_at_least(1), default=None, metavar="GB", help="memory per job in GB (default: 32)")
    g.add_argument("--slurm-array-parallelism", type=int_at_least(1), default=None, metavar="N",
                   help="at most N jobs of the grid at once (default: 64)")
    add_data_options(p)
    p.set_defaults(func=run)


def run(reg: Registry, args: argparse.Namespace) -> int:
    """Run the grid the options name; exit status 1 when a run failed or a result could not be
    saved, else 0."""
    from cirbench import distributed

    if distributed.launched():
        if args.launcher:
            raise CliError("--launcher submits jobs; do not start it under torchrun")
        if args.threads:
            import torch

            torch.set_num_threads(args.threads)
        try:
            device = distributed.init_from_env(args.device)
        except (ValueError, RuntimeError) as exc:
            raise CliError(str(exc)) from exc
        if not distributed.is_main():  # rank 0 prints; the others train quietly
            import contextlib

            os.environ["CIRBENCH_NO_PROGRESS"] = "1"

            with open(os.devnull, "w") as quiet, contextlib.redirect_stdout(quiet):
                return _run_grid(reg, args, device)
        return _run_grid(reg, args, device)
    return _run_grid(reg, args, None if args.launcher else device_and_threads(args))


def _run_grid(reg: Registry, args: argparse.Namespace, device) -> int:
    from cirbench.results import ResultsNotWritableError, RunResult
    from cirbench.runner import GridReport, Runner, RunOptions

    protocol = reg.protocol(args.protocol)
    data = data_locations(args)
    datasets = select_names(reg, "dataset", args.dataset, args.all)
    datasets, unavailable = split_available(reg, datasets, data, explicit=bool(args.dataset))
    for name, reason in unavailable:
        print(f"skipped dataset {name}: not found ({reason})")
    composers = select_names(reg, "composer", args.composer, args.all, ablations=args.ablations)
    seeds = args.seed if args.seed else list(protocol.seeds)
    options = RunOptions(
        results=Path(args.results), cache_dir=Path(args.cache_dir), device=device, force=args.force,
        checkpoint_every=args.checkpoint_every, checkpoint_seconds=60 * args.checkpoint_minutes, data=data,
        save_model=args.save_model, claim_timeout=60 * args.claim_timeout,
        workers=args.workers, compile=args.compile,
    )
    total = len(datasets) * len(composers) * len(seeds)
    where = f"as {args.launcher} jobs" if args.launcher else f"on {device}"
    print(f"protocol {protocol.label} · {len(datasets)} dataset(s) × {len(composers)} composer(s) "
          f"× {len(seeds)} seed(s) = {total} run(s) {where}; results in {args.results}")
    if args.dry_run:
        print(f"datasets: {', '.join(datasets)}\ncomposers: {', '.join(composers)}\n"
              f"seeds: {', '.join(map(str, seeds))}")
        return 0
    rows: list[list] = []
    counter = {"n": 0}
    t0 = time.perf_counter()
    k1 = f"R@{protocol.ks[0]}"

    def on_event(kind: str, key, result: RunResult | None) -> None:
        if kind == "start":
            counter["n"] += 1
            print(f"[{counter['n']}/{total}] {key} ...", flush=True)
            return
        if kind == "skip":
            counter["n"] += 1
            print(f"[{counter['n']}/{total}] {key}: result exists, skipped (--force redoes it)")
        if kind == "busy":
            counter["n"] += 1
            print(f"[{counter['n']}/{total}] {key}: being run by another runner, left to it "
                  "(see `cirbench status`)")
        r1 = result.metrics.overall.get(k1) if result is not None and result.metrics else None
        status = result.status if result is not None else "?"
        if kind == "done":
            detail = f"{k1} = {100 * r1:.1f}" if r1 is not None else (result.error or "")
            print(f"    {status}: {detail} ({result.wall_seconds:.0f} s)", flush=True)
        shown = {"done": status, "skip": "skipped", "busy": "running elsewhere"}[kind]
        rows.append([key.dataset, key.composer, key.seed, shown, "" if r1 is None else f"{100 * r1:.1f}"])

    try:
        if args.launcher:
            from cirbench.launch import LauncherError, launch_grid, resources_from_args

            try:
                report: GridReport = launch_grid(
                    args.launcher, protocol, datasets, composers, seeds, options,
                    device=args.device, threads=args.threads, resources=resources_from_args(args),
                    folder=Path(args.launcher_folder) if args.launcher_folder else None,
                    on_event=on_event, notify=lambda text: print(text, flush=True))
            except LauncherError as exc:
                raise CliError(str(exc)) from exc
        else:
            report = Runner(reg, options).run_grid(protocol, datasets, composers, seeds, on_event)
    except ResultsNotWritableError as exc:
        raise CliError(f"--results {args.results}: {exc}; nothing was run") from exc
    print()
    print(tabulate(rows, headers=["dataset", "composer", "seed", "status", f"R@{protocol.ks[0]}"]))
    busy = f", {len(report.busy)} left to other runners" if report.busy else ""
    print(f"\n{len(report.ran)} ran, {len(report.skipped)} skipped, {len(report.failed)} failed, "
          f"{len(report.diverged)} diverged{busy} in {time.perf_counter() - t0:.0f} s")
    if unavailable:
        print(f"{len(unavailable)} dataset(s) not available, skipped: "
              + ", ".join(name for name, _ in unavailable)
              + " (see `cirbench data verify NAME`; --data-root / $CIRBENCH_DATA say where to look)")
    for key, err in report.failed:
        print(f"FAILED {key}: {err}", file=sys.stderr)
    for unsaved in report.unsaved:
        r = unsaved.result
        shown = (f"Its metrics: {', '.join(f'{k} = {100 * v:.1f}' for k, v in r.metrics.overall.items())}"
                 if r.metrics else f"It {r.status}: {r.error}")
        print(f"NOT SAVED {unsaved}. {shown}", file=sys.stderr)
    if report.unsaved:
        print(f"{len(report.unsaved)} result(s) could not be written to {args.results}: copy the "
              "saved file(s) named above into it (same relative path) to keep them", file=sys.stderr)
    return 1 if report.failed or report.unsaved else 0
