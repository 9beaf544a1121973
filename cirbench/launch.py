"""The grid as cluster jobs: ``cirbench run --all --launcher slurm|local``.

Each (protocol, dataset, composer, seed) cell that is not finished becomes one job submitted
through `submitit <https://github.com/facebookincubator/submitit>`_: a Slurm job array
(``slurm``) or local processes (``local``, submitit's ``LocalExecutor``; what the tests use).
A job runs its cell with :meth:`cirbench.runner.Runner.run_grid`, so the claim rule of
:mod:`cirbench.claims` keeps two jobs (or a job and an interactive runner) from running the
same cell, and a job that was killed (time limit, preemption) leaves its checkpoint for the
next submission to resume. The submitting process waits for the jobs and reports as a local
run does.

Resources (:class:`Resources`) come from ``--slurm-*`` options over a TOML file
(``--launcher-config``) over the defaults.
"""

from __future__ import annotations

import dataclasses
import logging
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

from cirbench.protocol import Protocol
from cirbench.results import RunKey, RunResult
from cirbench.runner import GridReport, ResultNotSavedError, RunOptions

log = logging.getLogger(__name__)


class LauncherError(Exception):
    """A launcher cannot be used as asked (bad config file, no Slurm here...)."""


@dataclass(frozen=True)
class Resources:
    """What each job asks for: ``time`` in minutes, ``mem`` in GB, ``gpus`` and ``cpus`` per
    job, the Slurm ``partition`` (None: the cluster's default) and ``array_parallelism`` (at
    most that many jobs of the grid at once)."""

    partition: str | None = None
    time: int = 240
    gpus: int = 1
    cpus: int = 8
    mem: int = 32
    array_parallelism: int = 64

    def executor_parameters(self, launcher: str) -> dict[str, Any]:
        """The keyword arguments of submitit's ``AutoExecutor.update_parameters``. Local jobs
        take the time limit and the GPUs (submitit shows a local job the first ``gpus``
        devices, none with 0); memory, partition and parallelism are Slurm's."""
        params: dict[str, Any] = {
            "name": "cirbench",
            "timeout_min": self.time,
            "cpus_per_task": self.cpus,
            "tasks_per_node": 1,
            "nodes": 1,
            "gpus_per_node": self.gpus,
        }
        if launcher == "slurm":
            params.update(mem_gb=self.mem, slurm_array_parallelism=self.array_parallelism)
            if self.partition:
                params["slurm_partition"] = self.partition
        return params


_FIELDS = {f.name: f.type for f in dataclasses.fields(Resources)}


def read_resources(path: Path | str | None, overrides: dict[str, Any]) -> Resources:
    """:class:`Resources` from the TOML file ``path`` (keys: the field names; a ``[slurm]``
    table is also accepted) with ``overrides`` (None values ignored) on top. Raises
    :class:`LauncherError` naming the file and the key for an unknown key or a wrong type."""
    values: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise LauncherError(f"--launcher-config {path}: no such file") from None
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise LauncherError(f"--launcher-config {path}: cannot be read as TOML: {exc}") from exc
        if isinstance(data.get("slurm"), dict):
            data = {**{k: v for k, v in data.items() if k != "slurm"}, **data["slurm"]}
        for key, value in data.items():
            if key not in _FIELDS:
                raise LauncherError(f"--launcher-config {path}: unknown key {key!r} "
                                    f"(valid: {', '.join(_FIELDS)})")
            want = str if key == "partition" else int
            if not isinstance(value, want) or isinstance(value, bool) or (want is int and value < 0):
                raise LauncherError(f"--launcher-config {path}: key {key!r} must be "
                                    f"{'a string' if want is str else 'an integer >= 0'}, got {value!r}")
            values[key] = value
    values.update({k: v for k, v in overrides.items() if v is not None})
    return Resources(**values)


def resources_from_args(args) -> Resources:
    """The resources of ``cirbench run``'s options (see :func:`read_resources`)."""
    return read_resources(args.launcher_config,
                          {name: getattr(args, f"slurm_{name}", None) for name in _FIELDS})


def run_cell(key: RunKey, options: RunOptions, device: str | None, threads: int | None) -> dict:
    """The job: run one cell in this process (claims and all) and return its events
    ``[(kind, RunResult | None)]`` and the results that could not be saved
    ``[(result, path, reason, fallback)]`` (plain values: they travel back pickled)."""
    import torch

    from cirbench.plugins import load_registry
    from cirbench.provenance import resolve_device
    from cirbench.runner import Runner

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if threads:
        torch.set_num_threads(threads)
    options = dataclasses.replace(options, device=resolve_device(device))
    events: list[tuple[str, RunResult | None]] = []
    report = Runner(load_registry(), options).run_grid(
        key.protocol, [key.dataset], [key.composer], [key.seed],
        lambda kind, _key, result: events.append((kind, result)))
    unsaved = [(e.result, str(e.path), f"{type(e.reason).__name__}: {e.reason}",
                None if e.fallback is None else str(e.fallback)) for e in report.unsaved]
    return {"events": events, "unsaved": unsaved}


def launch_grid(
    launcher: str,
    protocol: Protocol,
    datasets: Iterable[str],
    composers: Iterable[str],
    seeds: Iterable[int],
    options: RunOptions,
    device: str | None = None,
    threads: int | None = None,
    resources: Resources = Resources(),
    folder: Path | None = None,
    on_event: Callable[[str, RunKey, RunResult | None], None] = lambda *_: None,
    notify: Callable[[str], None] = log.info,
) -> GridReport:
    """Submit every unfinished cell as a job (``launcher``: ``slurm`` or ``local``), wait for
    them all and return what they did, as :meth:`Runner.run_grid` does; ``on_event`` hears
    each job's events when it ends, ``notify`` the job ids once they are submitted. Finished cells are skipped without a job. A job that
    ends without a result (killed, time limit) counts as failed with the reason and its log
    file; its checkpoint stays for the next run. ``folder`` holds submitit's files (default:
    ``<results>/.submitit``). Raises :class:`LauncherError` when the executor cannot be made
    (e.g. no Slurm here), :class:`cirbench.results.ResultsNotWritableError` before submitting
    anything when the results folder cannot be written."""
    import submitit

    from cirbench.plugins import load_registry
    from cirbench.runner import Runner

    if launcher not in ("local", "slurm"):
        raise LauncherError(f"--launcher {launcher}: expected local or slurm")
    keys = [RunKey(protocol, d, c, s) for d in datasets for c in composers for s in seeds]
    planner = Runner(load_registry(), options)
    plan = [(key, planner._finished(key)) for key in keys]
    planner.store.check_writable([key for key, done in plan if done is None])
    folder = Path(folder) if folder is not None else Path(options.results) / ".submitit"
    try:
        executor = submitit.AutoExecutor(folder=folder, cluster=launcher)
    except Exception as exc:  # submitit raises RuntimeError / ValueError for a missing cluster
        raise LauncherError(f"--launcher {launcher}: {exc}") from exc
    executor.update_parameters(**resources.executor_parameters(launcher))
    report = GridReport()
    todo = []
    for key, done in plan:
        if done is not None:
            report.skipped.append(key)
            on_event("skip", key, done)
        else:
            todo.append(key)
    if not todo:
        return report
    with executor.batch():
        jobs = [executor.submit(run_cell, key, options, device, threads) for key in todo]
    ids = ", ".join(str(j.job_id) for j in jobs[:5]) + (" ..." if len(jobs) > 5 else "")
    notify(f"submitted {len(jobs)} {launcher} job(s) ({ids}); logs in {folder}; waiting for them")
    for key, job in zip(todo, jobs):
        try:
            out = job.result()
        except Exception as exc:  # the job died: submitit's FailedJobError / UncompletedJobError
            first = str(exc).strip().splitlines()
            reason = (f"job {job.job_id} ended without a result ({type(exc).__name__}: "
                      f"{first[-1] if first else ''}); log: {job.paths.stderr}")
            report.ran.append(key)
            report.failed.append((key, reason))
            on_event("start", key, None)
            continue
        for result, path, reason, fallback in out["unsaved"]:
            report.unsaved.append(ResultNotSavedError(
                key, result, Path(path), OSError(reason), None if fallback is None else Path(fallback)))
        for kind, result in out["events"]:
            if kind == "busy":
                report.busy.append(key)
            elif kind == "skip":
                report.skipped.append(key)
            elif kind == "done":
                report.ran.append(key)
                if result.status == "failed":
                    report.failed.append((key, result.error or ""))
                elif result.status == "diverged":
                    report.diverged.append(key)
            on_event(kind, key, result)
    return report
