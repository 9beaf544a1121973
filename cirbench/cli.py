"""The ``cirbench`` command: list, run, status, attention, export, leaderboard, check, data.

The CLI owns the terminal: it prints tables and reports; the library only logs.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path

from tabulate import tabulate

from cirbench.data.errors import DatasetNotAvailable, DatasetValidationError, UnsafePathError
from cirbench.data.locations import DataLocations
from cirbench.plugins import PluginError, Registry, UnknownNameError, load_registry
from cirbench.protocol import DEFAULT_PROTOCOL
from cirbench.claims import STALE_AFTER_SECONDS
from cirbench.train import CHECKPOINT_SECONDS


def default_cache_dir() -> Path:
    """``$CIRBENCH_CACHE``, else ``$XDG_CACHE_HOME/cirbench``, else ``~/.cache/cirbench``."""
    if os.environ.get("CIRBENCH_CACHE"):
        return Path(os.environ["CIRBENCH_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "cirbench"


class CliError(Exception):
    """A user error: printed without a traceback, exit status 2."""


def int_at_least(low: int):
    """An argparse ``type``: an integer >= ``low`` (anything else is refused by the parser,
    exit 2, before any work is done)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be >= {low}, got {value}")
        return value

    parse.__name__ = f"integer >= {low}"  # argparse names the type in its messages
    return parse


def positive_float(text: str) -> float:
    """An argparse ``type``: a finite number > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not (value > 0 and value != float("inf")):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return value


def _data_locations(args: argparse.Namespace) -> DataLocations:
    """``--data-root`` and ``--data NAME=PATH`` (see :mod:`cirbench.data.locations`)."""
    try:
        data = DataLocations.from_options(getattr(args, "data_root", None), getattr(args, "data", None))
    except ValueError as exc:
        raise CliError(str(exc)) from exc
    reg_names = getattr(args, "_dataset_names", None)
    unknown = sorted(set(data.overrides) - set(reg_names)) if reg_names is not None else []
    if unknown:
        raise CliError(f"--data {unknown[0]}=...: unknown dataset {unknown[0]!r}; valid datasets: "
                       f"{', '.join(sorted(reg_names))}")
    for name, path in data.overrides.items():
        if not path.is_dir():
            raise CliError(f"--data {name}={path}: {'not a folder' if path.exists() else 'no such folder'}")
    if data.root is not None and not data.root.is_dir():
        raise CliError(f"--data-root {data.root}: {'not a folder' if data.root.exists() else 'no such folder'} "
                       "(it should hold one sub-folder per dataset, e.g. fashion200k/, cirr/)")
    folders = getattr(args, "_dataset_folders", None)
    if folders and data.data_root.is_dir() and not any((data.data_root / f).exists() for f in folders):
        origin = "--data-root" if data.root is not None else "the data root"
        print(f"cirbench: warning: {origin} {data.data_root} holds none of the dataset folders "
              f"cirbench looks for there: {', '.join(sorted(folders))}", file=sys.stderr)
    return data


def _split_available(reg: Registry, names: list[str], data: DataLocations,
                     explicit: bool) -> tuple[list[str], list[tuple[str, str]]]:
    """(available names, [(skipped name, reason)]). An explicitly named dataset that is not
    available is an error (its full message: what was expected where, where it is published)."""
    ok, skipped = [], []
    for name in names:
        spec = reg.dataset(name)
        avail = spec.availability(data)
        if avail.ok:
            ok.append(name)
        elif explicit:
            spec.layout.check(name, spec.root(data), data)  # raises DatasetNotAvailable
        else:
            skipped.append((name, avail.detail))
    return ok, skipped


def _device_and_threads(args: argparse.Namespace):
    """The torch device of ``--device`` (default: CUDA when present) after applying
    ``--threads``."""
    import torch

    from cirbench.provenance import resolve_device

    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        return resolve_device(args.device)
    except (ValueError, RuntimeError) as exc:
        raise CliError(str(exc)) from exc


def _cmd_list(reg: Registry, args: argparse.Namespace) -> int:
    def rows(kind: str, table: dict, describe) -> list[list[str]]:
        return [[name, describe(item), str(reg.provider(kind, name))] for name, item in sorted(table.items())]

    data = _data_locations(args)
    print("Datasets")
    print(tabulate(
        [[n, d.description, str(d.availability(data)), str(reg.provider("dataset", n))]
         for n, d in sorted(reg.datasets.items())],
        headers=["name", "description", "availability", "provided by"], tablefmt="simple",
        maxcolwidths=[None, 60, 60, None]))
    print("\nComposers")
    print(tabulate(rows("composer", reg.composers,
                        lambda c: c.description + (f" [ablation of {c.ablation_of}]" if c.ablation_of else "")),
                   headers=["name", "description", "provided by"], tablefmt="simple",
                   maxcolwidths=[None, 80, None]))
    print("\nProtocols")
    print(tabulate(
        [[p.label, p.description, str(reg.provider("protocol", n))] for n, p in sorted(reg.protocols.items())],
        headers=["name@hash", "description", "provided by"], tablefmt="simple",
        maxcolwidths=[None, 80, None]))
    return 0


def _names(reg: Registry, kind: str, given: list[str] | None, all_: bool,
           ablations: bool = True) -> list[str]:
    table = getattr(reg, f"{kind}s")
    if all_ and not given:
        return sorted(n for n, item in table.items() if ablations or not getattr(item, "ablation_of", ""))
    if not given:
        raise CliError(f"give --{kind} NAME (valid: {', '.join(sorted(table))}) or --all")
    for name in given:
        getattr(reg, kind)(name)  # raises UnknownNameError listing the valid names
    return list(dict.fromkeys(given))


def _cmd_run(reg: Registry, args: argparse.Namespace) -> int:
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
                return _run(reg, args, device)
        return _run(reg, args, device)
    return _run(reg, args, None if args.launcher else _device_and_threads(args))


def _run(reg: Registry, args: argparse.Namespace, device) -> int:
    from cirbench.results import ResultsNotWritableError, RunResult
    from cirbench.runner import GridReport, Runner, RunOptions

    protocol = reg.protocol(args.protocol)
    data = _data_locations(args)
    datasets = _names(reg, "dataset", args.dataset, args.all)
    datasets, unavailable = _split_available(reg, datasets, data, explicit=bool(args.dataset))
    for name, reason in unavailable:
        print(f"skipped dataset {name}: not found ({reason})")
    composers = _names(reg, "composer", args.composer, args.all, ablations=args.ablations)
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


def _load_saved(runner, key, composer, args: argparse.Namespace) -> None:
    """Load the run's saved model (``cirbench run ... --save-model``) into ``composer``;
    CliError when it is missing or does not fit."""
    import pickle

    from cirbench.attention import load_saved_model

    model_file = runner.store.model_path(key)
    if not model_file.exists():
        raise CliError(
            f"no saved model for {key}: expected {model_file}. Run `cirbench run --composer "
            f"{key.composer} --dataset {key.dataset} --protocol {key.protocol.name} --seed {key.seed} "
            f"--results {args.results} --save-model` first")
    try:
        load_saved_model(composer, model_file)
    except (RuntimeError, OSError, ValueError, pickle.UnpicklingError) as exc:
        raise CliError(f"{model_file}: cannot load it into composer {key.composer!r} "
                       f"(saved by another version of the composer?): {exc}") from exc


def _saved_run(reg: Registry, args: argparse.Namespace):
    """``(runner, key, dataset)`` of the run that ``--protocol/--dataset/--composer/--seed``
    name, for the commands that load its saved model (attention, export); names and the
    dataset's availability are checked first."""
    from cirbench.results import RunKey
    from cirbench.runner import Runner, RunOptions

    protocol = reg.protocol(args.protocol)
    reg.composer(args.composer)  # raises UnknownNameError listing the valid names
    reg.dataset(args.dataset)
    data = _data_locations(args)
    _split_available(reg, [args.dataset], data, explicit=True)
    seed = args.seed if args.seed is not None else protocol.seeds[0]
    device = _device_and_threads(args)
    runner = Runner(reg, RunOptions(results=Path(args.results), cache_dir=Path(args.cache_dir),
                                    device=device, data=data))
    key = RunKey(protocol, args.dataset, args.composer, seed)
    dataset = runner.dataset(protocol, args.dataset)
    return runner, key, dataset


def _cmd_export(reg: Registry, args: argparse.Namespace) -> int:
    from cirbench.data.errors import AnnotationError
    from cirbench.export import ExportFormatError, export_predictions, has_hidden_split
    from cirbench.train import seed_everything

    runner, key, dataset = _saved_run(reg, args)
    protocol, seed = key.protocol, key.seed
    if not has_hidden_split(dataset):
        raise CliError(f"dataset {args.dataset!r} has no hidden test split to export (its loader "
                       "defines no hidden_split; see cirbench/export.py)")
    try:
        split = dataset.hidden_split(Path(args.cache_dir))
    except AnnotationError as exc:
        raise CliError(str(exc)) from exc
    seed_everything(seed)
    composer = runner.build_composer(key, dataset)
    _load_saved(runner, key, composer, args)
    try:
        files = export_predictions(composer, split, Path(args.out), batch_size=protocol.eval_batch_size,
                                   chunk=protocol.eval_chunk)
    except ExportFormatError as exc:
        raise CliError(f"the export does not pass the format's checks, nothing written: {exc}") from exc
    print(f"{key}: {len(split.queries)} queries of {args.dataset} {split.name} ranked")
    for f in files:
        print(f"wrote {f}")
    return 0


def _cmd_attention(reg: Registry, args: argparse.Namespace) -> int:
    from cirbench.attention import write_attention_report
    from cirbench.composer import supports_attention_maps
    from cirbench.train import seed_everything

    runner, key, dataset = _saved_run(reg, args)
    protocol, seed = key.protocol, key.seed
    n = len(dataset.queries())
    if args.query_index:
        bad = [i for i in args.query_index if not 0 <= i < n]
        if bad:
            raise CliError(f"--query-index {bad[0]}: out of range; dataset {args.dataset} has {n} "
                           f"test queries under protocol {protocol.label} (0..{n - 1})")
        indices = list(dict.fromkeys(args.query_index))
    else:
        indices = list(range(min(args.queries, n)))
    seed_everything(seed)
    composer = runner.build_composer(key, dataset)
    if not supports_attention_maps(composer):
        raise CliError(f"composer {args.composer!r} ({reg.provider('composer', args.composer)}) has no "
                       "attention maps: it does not implement Composer.attention_maps "
                       "(the optional method of cirbench/composer.py)")
    _load_saved(runner, key, composer, args)
    records = write_attention_report(
        composer, dataset, indices, Path(args.out),
        heading=f"Attention maps: {args.composer} on {args.dataset} ({protocol.label}, seed {seed})",
    )
    files = sum(len(r.files) for r in records)
    print(f"{key}: {files} attention overlay(s) of {len(records)} quer{'y' if len(records) == 1 else 'ies'} "
          f"in {args.out}")
    print(f"wrote {Path(args.out) / 'index.md'}")
    return 0


def _cmd_leaderboard(reg: Registry, args: argparse.Namespace) -> int:
    from cirbench.leaderboard import DEFAULT_BASELINES, write_leaderboard
    from cirbench.results import ResultsStore

    store = ResultsStore(args.results)
    if not store.root.exists():
        raise CliError(f"--results {args.results}: no such folder (run `cirbench run` first)")
    if not store.root.is_dir():
        raise CliError(f"--results {args.results}: not a folder")
    baselines = (DEFAULT_BASELINES if args.baselines is None
                 else tuple(b.strip() for b in args.baselines.split(",") if b.strip()))
    data = _data_locations(args)

    def dataset_loader(protocol_name: str, protocol_hash: str, dataset_name: str):
        protocol = reg.protocol(protocol_name)
        if protocol.hash != protocol_hash:
            raise ValueError(f"protocol {protocol_name} is now {protocol.label}, the results are of "
                             f"{protocol_name}@{protocol_hash}")
        return reg.dataset(dataset_name).create(protocol, Path(args.cache_dir), data)

    written = write_leaderboard(store, Path(args.out), plots=not args.no_plots, baselines=baselines,
                                dataset_loader=None if args.no_examples else dataset_loader)
    for path in written:
        print(f"wrote {path}")
    for name in ("results.csv", "README.md", "index.html"):
        print(f"wrote {Path(args.out) / name}")
    return 0


def _fmt_seconds(seconds: float) -> str:
    """``42 s``, ``3 min``, ``2.5 h``."""
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _cmd_status(reg: Registry, args: argparse.Namespace) -> int:
    from cirbench.results import ResultsStore, RunKey
    from cirbench.runner import grid_status

    store = ResultsStore(args.results)
    if not store.root.is_dir():
        raise CliError(f"--results {args.results}: {'not a folder' if store.root.exists() else 'no such folder'}")
    if args.protocol:
        protocols = [reg.protocol(name) for name in dict.fromkeys(args.protocol)]
    else:  # the registered protocols that have a folder here, else the default one
        protocols = [p for p in reg.protocols.values() if (store.root / p.label).is_dir()] \
            or [reg.protocol(DEFAULT_PROTOCOL)]
    data = _data_locations(args)
    datasets = _names(reg, "dataset", args.dataset, True)
    datasets, _ = _split_available(reg, datasets, data, explicit=bool(args.dataset))
    composers = _names(reg, "composer", args.composer, True, ablations=args.ablations)
    keys = [RunKey(p, d, c, seed) for p in protocols for d in datasets for c in composers
            for seed in (args.seed or p.seeds)]
    cells = grid_status(store, keys, stale_after=60 * args.claim_timeout)
    rows = []
    for cell in cells:
        r, claim = cell.result, cell.claim
        if cell.state == "running":
            detail = f"{claim.host} pid {claim.pid}, for {_fmt_seconds(claim.age_seconds())}"
        elif cell.state == "done":
            ks = [f"R@{k}" for k in cell.key.protocol.ks[:2]]
            detail = ", ".join(f"{k} = {100 * r.metrics.overall[k]:.1f}" for k in ks if k in r.metrics.overall)
        elif r is not None:
            detail = (r.error or "").splitlines()[0] if r.error else ""
        else:
            detail = ""
        if cell.stale:
            detail = (detail + "; " if detail else "") + \
                f"stale claim of {claim.host} pid {claim.pid} (gone; the next run takes it over)"
        rows.append([cell.key.protocol.label, cell.key.dataset, cell.key.composer, cell.key.seed,
                     cell.state, detail])
    print(tabulate(rows, headers=["protocol", "dataset", "composer", "seed", "state", "detail"],
                   maxcolwidths=[None, None, None, None, None, 70], disable_numparse=True))
    counts = {s: sum(c.state == s for c in cells) for s in ("done", "running", "failed", "diverged", "pending")}
    print(f"\n{len(cells)} cell(s): " + ", ".join(f"{n} {s}" for s, n in counts.items()))
    return 0


def _cmd_check(reg: Registry, args: argparse.Namespace) -> int:
    from cirbench.testing import CheckContext, run_checks

    kinds = ("composer", "dataset")
    valid = "; ".join(f"valid {k}s: {', '.join(sorted(getattr(reg, f'{k}s'))) or '(none)'}" for k in kinds)
    if args.all and args.names:
        raise CliError("give composer or dataset NAMEs or --all, not both")
    data = _data_locations(args)
    if args.all:
        subjects = [(k, n) for k in kinds for n in sorted(getattr(reg, f"{k}s"))]
        available, unavailable = _split_available(
            reg, [n for k, n in subjects if k == "dataset"], data, explicit=False)
        subjects = [(k, n) for k, n in subjects if k != "dataset" or n in available]
        for name, reason in unavailable:
            print(f"skipped dataset {name}: not found ({reason})")
    elif not args.names:
        raise CliError(f"give a composer or dataset NAME ({valid}) or --all")
    else:
        subjects = []
        for name in dict.fromkeys(args.names):
            found = [(k, name) for k in kinds if name in getattr(reg, f"{k}s")]
            if not found:
                raise UnknownNameError(f"unknown composer or dataset {name!r}; {valid}")
            subjects += found
        _split_available(reg, [n for k, n in subjects if k == "dataset"], data, explicit=True)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    ctx = CheckContext(
        protocol=reg.protocol(args.protocol) if args.protocol else None,
        registry=reg,
        cache_dir=args.cache_dir,
        data=data,
    )
    print(f"conformance checks under protocol {ctx.protocol.label}: {len(subjects)} item(s)")
    results = []
    for kind, name in subjects:
        t0 = time.perf_counter()
        print(f"{kind} {name} ({reg.provider(kind, name)}) ...", end=" ", flush=True)
        mine = run_checks(kind, name, context=ctx)
        counts: dict[str, int] = {}
        for r in mine:
            counts[r.status] = counts.get(r.status, 0) + 1
        print(", ".join(f"{v} {k}" for k, v in counts.items()) + f" ({time.perf_counter() - t0:.1f} s)",
              flush=True)
        results += mine
    shown = {"failed": "FAILED", "xpassed": "XPASSED"}
    rows = [[r.kind, r.name, r.check, shown.get(r.status, r.status), r.message, f"{r.seconds:.1f}"]
            for r in results]
    print()
    print(tabulate(rows, headers=["kind", "name", "check", "result", "details", "s"],
                   maxcolwidths=[None, None, None, None, 70, None], disable_numparse=True))
    failed = [r for r in results if r.failed]
    total = {s: sum(r.status == s for r in results) for s in ("passed", "skipped", "xfailed")}
    print(f"\n{total['passed']} passed, {len(failed)} failed, {total['skipped']} skipped, "
          f"{total['xfailed']} failed as expected ({len(results)} checks)")
    for r in failed:
        print(f"FAILED {r.kind} {r.name} {r.check}: {r.message}", file=sys.stderr)
    return 1 if failed else 0


def _cmd_data_verify(reg: Registry, args: argparse.Namespace) -> int:
    from cirbench.data.verify import verify_dataset

    spec = reg.dataset(args.name)
    if spec.layout is None:
        raise CliError(f"dataset {args.name!r} is embedded (generated, not read from a folder): "
                       "nothing to verify")
    data = _data_locations(args)
    try:
        spec.layout.check(args.name, spec.root(data), data)
    except DatasetNotAvailable as exc:  # the same message as `run`; exit 1 like any bad copy
        print(f"cirbench: error: {exc}", file=sys.stderr)
        return 1
    report = verify_dataset(spec, data, workers=args.workers)
    print(f"dataset {report.name} at {report.root}")
    print(f"images referenced by the annotations: {report.images_listed}, decodable: {report.images_ok}")
    if report.counts:
        print(tabulate([[c.what, "?" if c.found is None else c.found,
                         "-" if c.expected is None else c.expected, c.source,
                         "ok" if c.ok and c.found is not None else ("-" if c.found is None else "DIFFERS")]
                        for c in report.counts],
                       headers=["count", "found", "published", "source", ""], tablefmt="simple"))
    for w in report.warnings:
        print(f"warning: {w}")
    if report.ok:
        print("OK: no problems")
        return 0
    print(f"\n{len(report.problems)} problem(s):")
    for p in report.problems:
        print(f"  {p}")
    if report.url:
        print(f"the dataset is published at {report.url}")
    return 1


def _cmd_data_cache_list(reg: Registry, args: argparse.Namespace) -> int:
    from cirbench.data.cache import cache_entries

    entries = cache_entries(args.cache_dir, args.kind)
    if not entries:
        print(f"no caches under {args.cache_dir}" + (f" of kind {args.kind}" if args.kind else ""))
        return 0
    print(tabulate([[e.kind, e.name, e.label, e.built_from, "?" if e.entries is None else e.entries,
                     f"{e.megabytes:.1f}", e.created, e.status, str(e.folder)]
                    for e in entries],
                   headers=["kind", "name", "label", "built from", "entries", "MiB", "created", "status",
                            "folder"],
                   tablefmt="simple"))
    print(f"\n{len(entries)} cache(s), {sum(e.megabytes for e in entries):.1f} MiB")
    return 0


def _cmd_data_cache_clear(reg: Registry, args: argparse.Namespace) -> int:
    from cirbench.data.cache import cache_entries, clear_cache

    if args.name is not None and args.name not in reg.datasets \
            and all(e.name != args.name for e in cache_entries(args.cache_dir)):
        reg.dataset(args.name)  # raises UnknownNameError listing the valid names
    removed = clear_cache(args.cache_dir, args.name, args.kind)
    for e in removed:
        print(f"removed {e.kind} cache {e.folder} ({e.megabytes:.1f} MiB)")
    what = " ".join(x for x in (args.kind, "cache(s)", f"of {args.name}" if args.name else "") if x)
    print(f"{len(removed)} {what} removed from {args.cache_dir}")
    return 0


def _add_data_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-root", default=None, metavar="DIR",
                   help="folder holding the local datasets, each in its own sub-folder (default: "
                   "$CIRBENCH_DATA, else ~/.local/share/cirbench)")
    p.add_argument("--data", action="append", default=None, metavar="NAME=PATH",
                   help="the folder of one dataset (repeatable; also $CIRBENCH_DATA_<NAME>)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cirbench",
        description="Composed image retrieval benchmark: train and evaluate every composer on "
        "every dataset under one fixed protocol.",
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv: debug)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("list", help="datasets (and whether each is available here), composers and "
                       "protocols, with the plugin providing each")
    _add_data_options(p)
    p.set_defaults(func=_cmd_list)

    p = sub.add_parser("run", help="train and evaluate composers on datasets under a protocol")
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
    p.add_argument("--results", default="results", metavar="DIR", help="results folder (default: results)")
    p.add_argument("--cache-dir", default=str(default_cache_dir()), metavar="DIR",
                   help="where datasets keep generated or decoded data (default: %(default)s)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:N (default: cuda when present)")
    p.add_argument("--threads", type=int_at_least(1), default=None, metavar="N", help="torch CPU threads")
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
    _add_data_options(p)
    p.set_defaults(func=_cmd_run)

    p = sub.add_parser("status", help="the grid of a results folder: done, running (claimed), failed, "
                       "diverged, pending")
    p.add_argument("--results", default="results", metavar="DIR", help="results folder (default: results)")
    p.add_argument("--protocol", action="append", metavar="NAME",
                   help="protocol (repeatable; default: every registered protocol with results here)")
    p.add_argument("--composer", action="append", metavar="NAME", help="only this composer (repeatable)")
    p.add_argument("--dataset", action="append", metavar="NAME", help="only this dataset (repeatable)")
    p.add_argument("--seed", type=int_at_least(0), action="append", metavar="N",
                   help="seed (repeatable; default: the protocol's seeds)")
    p.add_argument("--ablations", action="store_true", help="count the ablation composers in the grid")
    p.add_argument("--claim-timeout", type=positive_float, default=STALE_AFTER_SECONDS / 60, metavar="M",
                   help="a claim not touched for M minutes is stale (default: %(default)g)")
    _add_data_options(p)
    p.set_defaults(func=_cmd_status)

    p = sub.add_parser("attention", help="draw a trained composer's attention maps over the reference "
                       "images of test queries (needs `cirbench run ... --save-model`)")
    p.add_argument("--composer", required=True, metavar="NAME", help="a composer with attention maps")
    p.add_argument("--dataset", required=True, metavar="NAME", help="the dataset it was run on")
    p.add_argument("--protocol", default=DEFAULT_PROTOCOL, metavar="NAME",
                   help=f"protocol of the run (default: {DEFAULT_PROTOCOL})")
    p.add_argument("--seed", type=int_at_least(0), default=None, metavar="N",
                   help="seed of the run (default: the protocol's first seed)")
    p.add_argument("--results", default="results", metavar="DIR", help="results folder (default: results)")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--queries", type=int_at_least(1), default=8, metavar="N",
                       help="the first N test queries (default: 8)")
    which.add_argument("--query-index", type=int_at_least(0), nargs="+", metavar="I",
                       help="these test queries (0-based indices into the dataset's test queries)")
    p.add_argument("--out", required=True, metavar="DIR", help="folder for the PNGs and index.md")
    p.add_argument("--cache-dir", default=str(default_cache_dir()), metavar="DIR",
                   help="where datasets keep generated or decoded data (default: %(default)s)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:N (default: cuda when present)")
    p.add_argument("--threads", type=int_at_least(1), default=None, metavar="N", help="torch CPU threads")
    _add_data_options(p)
    p.set_defaults(func=_cmd_attention)

    p = sub.add_parser("export", help="write a trained composer's predictions on a hidden test split in "
                       "the format its evaluation server or starter kit reads (needs `cirbench run ... "
                       "--save-model`)")
    p.add_argument("--composer", required=True, metavar="NAME")
    p.add_argument("--dataset", required=True, metavar="NAME", help="the dataset it was run on (cirr, fashioniq, ...)")
    p.add_argument("--protocol", default=DEFAULT_PROTOCOL, metavar="NAME",
                   help=f"protocol of the run (default: {DEFAULT_PROTOCOL})")
    p.add_argument("--seed", type=int, default=None, metavar="N",
                   help="seed of the run (default: the protocol's first seed)")
    p.add_argument("--results", default="results", metavar="DIR", help="results folder (default: results)")
    p.add_argument("--out", required=True, metavar="DIR", help="folder for the prediction files")
    p.add_argument("--cache-dir", default=str(default_cache_dir()), metavar="DIR",
                   help="where datasets keep generated or decoded data (default: %(default)s)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:N (default: cuda when present)")
    p.add_argument("--threads", type=int, default=None, metavar="N", help="torch CPU threads")
    _add_data_options(p)
    p.set_defaults(func=_cmd_export)

    p = sub.add_parser("leaderboard", help="write the leaderboard (Markdown, CSV, plots) from results")
    p.add_argument("--results", default="results", metavar="DIR", help="results folder (default: results)")
    p.add_argument("--out", default="leaderboard", metavar="DIR", help="output folder (default: leaderboard)")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG bar charts files (index.html keeps its plots)")
    p.add_argument("--baselines", default=None, metavar="NAMES",
                   help="comma-separated composers the composition gain (R@1 minus the best of them) is "
                   "measured against (default: cirbench.leaderboard.DEFAULT_BASELINES, the baselines "
                   "plugin's image-only and text-only composers)")
    p.add_argument("--no-examples", action="store_true",
                   help="no retrieval examples in index.html (they build each dataset to show its images)")
    p.add_argument("--cache-dir", default=str(default_cache_dir()), metavar="DIR",
                   help="where datasets keep generated or decoded data, for the retrieval examples "
                   "(default: %(default)s)")
    _add_data_options(p)
    p.set_defaults(func=_cmd_leaderboard)

    p = sub.add_parser("check", help="run the conformance checks on composers or datasets (plugin authors)")
    p.add_argument("names", nargs="*", metavar="NAME", help="a composer or dataset (several allowed)")
    p.add_argument("--all", action="store_true", help="every registered composer and dataset")
    p.add_argument("--protocol", default=None, metavar="NAME",
                   help="protocol the checks build under (default: smoke with a 32-wide embedding "
                   "and batches of 4)")
    p.add_argument("--cache-dir", default=None, metavar="DIR",
                   help="where datasets keep generated or decoded data (default: a temporary folder)")
    p.add_argument("--threads", type=int_at_least(1), default=None, metavar="N",
                   help="torch CPU threads (1 is fastest for these tiny models on a busy machine)")
    _add_data_options(p)
    p.set_defaults(func=_cmd_check)

    p = sub.add_parser("data", help="local datasets: verify a copy; list or clear the caches")
    data_sub = p.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    q = data_sub.add_parser("verify", help="check a local dataset: required files, links, every image "
                            "decodable, the checks every run makes (triplets, queries, targets in their "
                            "galleries), counts against the published ones; exit 1 on problems")
    q.add_argument("name", metavar="NAME", help="a dataset read from a local folder")
    q.add_argument("--workers", type=int_at_least(1), default=4, metavar="N", help="decoding threads (default: 4)")
    _add_data_options(q)
    q.set_defaults(func=_cmd_data_verify)
    q = data_sub.add_parser("cache", help="the caches: decoded images, generated datasets, text embeddings")
    cache_sub = q.add_subparsers(dest="cache_command", required=True, metavar="ACTION")
    from cirbench.data.cache import KINDS

    for action, func, hlp in (("list", _cmd_data_cache_list, "list the caches and what each was built from"),
                              ("clear", _cmd_data_cache_clear, "remove caches (all, or NAME's, or of --kind)")):
        c = cache_sub.add_parser(action, help=hlp)
        if action == "clear":
            c.add_argument("name", nargs="?", default=None, metavar="NAME", help="only this dataset's caches")
        c.add_argument("--kind", choices=sorted(KINDS), default=None,
                       help="only caches of this kind (default: every kind)")
        c.add_argument("--cache-dir", default=str(default_cache_dir()), metavar="DIR",
                       help="the cache directory (default: %(default)s)")
        c.set_defaults(func=func)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = [logging.WARNING, logging.INFO, logging.DEBUG][min(args.verbose, 2)]
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    try:
        reg = load_registry()
        args._dataset_names = sorted(reg.datasets)
        args._dataset_folders = sorted({d.layout.folder or n for n, d in reg.datasets.items() if d.layout})
        return args.func(reg, args)
    except (PluginError, UnknownNameError, CliError, DatasetNotAvailable, DatasetValidationError,
            UnsafePathError) as exc:
        print(f"cirbench: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
