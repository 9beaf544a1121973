"""The grid runner: protocol x dataset x composer x seed, one result file per run.

Before training, the grid checks that its result folders can be written. Finished runs are
skipped (``force`` redoes them; a result file that cannot be read is redone, with a warning);
a composer that raises is recorded as ``failed`` and the grid goes on; a non-finite loss or
embedding ends that run as ``diverged``. An interrupted run resumes from its checkpoint the
next time. A result that cannot be written after its run (disk full, permissions changed) is
written under ``<cache>/unsaved-results/`` (else the system's temporary folder) instead, and
the grid goes on (:class:`ResultNotSavedError`, ``GridReport.unsaved``).

Several runners (processes, hosts, cluster jobs) may share one results folder: each cell is
run under a claim (:mod:`cirbench.claims`), so no cell is run twice at once. Under
``torch.distributed`` (:mod:`cirbench.distributed`) every rank trains; rank 0 claims,
evaluates and writes.
"""

from __future__ import annotations

import datetime as dt
import logging
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import torch

import cirbench
from cirbench import distributed
from cirbench.claims import HEARTBEAT_SECONDS, STALE_AFTER_SECONDS, Claim, Heartbeat, read_claim, release, try_claim
from cirbench.build import build_composer, build_dataset
from cirbench.data.contract import CIRDataset
from cirbench.data.locations import DataLocations
from cirbench.evaluate import NonFiniteEmbeddingError, evaluate
from cirbench.plugins import Registry
from cirbench.protocol import Protocol
from cirbench.provenance import (
    describe_device,
    git_commit,
    package_versions,
    peak_memory_mb,
    reset_peak_memory,
)
from cirbench.results import (
    FINAL_STATUSES,
    EvalStats,
    Metrics,
    ParamCounts,
    ProtocolRef,
    ProviderRef,
    ResultsStore,
    RunKey,
    RunResult,
    SavedModel,
)
from cirbench.storage import atomic_torch_save, atomic_write_json
from cirbench.train import CHECKPOINT_SECONDS, DivergedError, train

log = logging.getLogger(__name__)


@dataclass
class RunOptions:
    """How to run (never what is measured: that is the protocol's)."""

    results: Path
    cache_dir: Path
    device: torch.device
    force: bool = False
    checkpoint_every: int | None = None  # steps between checkpoints (None: a tenth of the budget)
    checkpoint_seconds: float | None = CHECKPOINT_SECONDS  # and whenever this much time has passed
    data: DataLocations | None = None  # where local datasets live (None: from the environment)
    save_model: bool = False  # keep the trained state_dict beside the result (ResultsStore.model_path)
    claim_timeout: float = STALE_AFTER_SECONDS  # seconds without heartbeat before a claim is stale
    heartbeat_seconds: float = HEARTBEAT_SECONDS  # how often a running cell's claim is touched
    workers: int = 0  # DataLoader worker processes for datasets read from files (0: main thread)
    compile: bool = False  # torch.compile the composer's submodules (cirbench.train.compile_composer)


class ResultNotSavedError(Exception):
    """A run ended but its result could not be written to the results folder.

    ``result`` is the run's :class:`RunResult`, ``path`` where it should have gone, ``reason``
    the error, and ``fallback`` the file it was written to instead (None when that failed
    too)."""

    def __init__(self, key: RunKey, result: RunResult, path: Path, reason: Exception,
                 fallback: Path | None) -> None:
        self.key, self.result, self.path, self.reason, self.fallback = key, result, path, reason, fallback
        where = (f"the result is saved in {fallback} instead" if fallback
                 else "no fallback file could be written either")
        super().__init__(f"{key}: could not write its result to {path} "
                         f"({type(reason).__name__}: {reason}); {where}")


@dataclass
class GridReport:
    """What a grid run did. ``unsaved`` lists the runs whose result could not be written to
    the results folder (they are also in ``ran``, and in ``failed``/``diverged`` by status)."""

    ran: list[RunKey] = field(default_factory=list)
    skipped: list[RunKey] = field(default_factory=list)
    failed: list[tuple[RunKey, str]] = field(default_factory=list)
    diverged: list[RunKey] = field(default_factory=list)
    unsaved: list[ResultNotSavedError] = field(default_factory=list)
    busy: list[RunKey] = field(default_factory=list)  # claimed by another runner, left to it


class Runner:
    """Runs (protocol, dataset, composer, seed) cells and stores their results."""

    def __init__(self, registry: Registry, options: RunOptions) -> None:
        self.registry = registry
        self.options = options
        self.store = ResultsStore(options.results)
        self._datasets: dict[tuple[str, str], CIRDataset] = {}

    def dataset(self, protocol: Protocol, name: str) -> CIRDataset:
        """Build (once per protocol and name) and check a dataset."""
        key = (protocol.hash, name)
        if key not in self._datasets:
            spec = self.registry.dataset(name)
            self._datasets[key] = build_dataset(spec, protocol, self.options.cache_dir, self.options.data,
                                                provider=self._provider("dataset", name))
        return self._datasets[key]

    def run_grid(
        self,
        protocol: Protocol,
        datasets: Iterable[str],
        composers: Iterable[str],
        seeds: Iterable[int],
        on_event: Callable[[str, RunKey, RunResult | None], None] = lambda *_: None,
    ) -> GridReport:
        """Run every cell; ``on_event(kind, key, result)`` is told ``start``, ``skip`` (with
        the stored result), ``busy`` (another runner holds the cell's claim; result None) and
        ``done`` for each, so a front end can report progress.

        Before anything is built or trained, checks that the result folder of every cell to
        run can be written (raises :class:`cirbench.results.ResultsNotWritableError`
        otherwise). A result file that cannot be read counts as not done (a warning names it)
        and is redone.

        Several runners may share the results folder: a cell is run only under its claim
        (:mod:`cirbench.claims`); a cell claimed by a live runner is left to it (``busy``),
        and a cell whose result was written by another runner after this grid started is
        skipped. Under ``torch.distributed`` rank 0 decides (and claims) for every rank."""
        keys = [RunKey(protocol, ds, comp, seed) for ds in datasets for comp in composers for seed in seeds]
        main = distributed.is_main()
        plan = [(key, self._finished(key) if main else None) for key in keys]
        if main:
            self.store.check_writable([key for key, finished in plan if finished is None])
        grid_start = time.time()
        report = GridReport()
        for key, finished in plan:
            claim = None
            if main and finished is None:
                claim = self._claim(key)
                if claim is None:
                    decision = "busy"
                else:
                    finished = self._written_since(key, grid_start)
                    decision = "skip" if finished is not None else "run"
            else:
                decision = "skip" if finished is not None else "run"
            decision = distributed.broadcast_object(decision)
            try:
                if decision == "busy":
                    report.busy.append(key)
                    on_event("busy", key, None)
                    continue
                if decision == "skip":
                    report.skipped.append(key)
                    on_event("skip", key, finished)
                    continue
                on_event("start", key, None)
                try:
                    if claim is not None:
                        with Heartbeat(self.store.claim_path(key), self.options.heartbeat_seconds):
                            result = self.run_one(key)
                    else:
                        result = self.run_one(key)
                except ResultNotSavedError as exc:
                    log.error("%s", exc)
                    report.unsaved.append(exc)
                    result = exc.result
                report.ran.append(key)
                if result is None:  # a rank other than 0: it trained, rank 0 reports
                    continue
                if result.status == "failed":
                    report.failed.append((key, result.error or ""))
                elif result.status == "diverged":
                    report.diverged.append(key)
                on_event("done", key, result)
            finally:
                if claim is not None:
                    release(self.store.claim_path(key), claim)
        return report

    def _claim(self, key: RunKey) -> Claim | None:
        """Our claim on ``key``, or None when a live runner holds it."""
        return try_claim(self.store.claim_path(key), self.options.claim_timeout)

    def _written_since(self, key: RunKey, since: float) -> RunResult | None:
        """The result of ``key`` when another runner wrote it after ``since`` (seconds since
        the epoch; this grid's start), whatever its status: this grid does not run a cell
        twice. Else None."""
        path = self.store.path(key)
        try:
            if path.stat().st_mtime < since:
                return None
        except FileNotFoundError:
            return None
        return self.store.read(key)

    def build_composer(self, key: RunKey, dataset: CIRDataset) -> "cirbench.Composer":
        """The composer of ``key``, untrained, on the run's device, built as a run builds it
        (:func:`cirbench.build.build_composer`, seeded with the run's seed)."""
        return build_composer(
            self.registry.composer(key.composer), key.protocol, dataset,
            device=self.options.device, cache_dir=self.options.cache_dir, seed=key.seed,
            dataset_name=key.dataset, provider=self._provider("composer", key.composer),
        )

    def _provider(self, kind: str, name: str) -> str | None:
        """Who provides ``name`` (plugin and distribution), for messages; None when unknown."""
        try:
            return str(self.registry.provider(kind, name))
        except KeyError:
            return None

    def _finished(self, key: RunKey) -> RunResult | None:
        """The stored result of ``key`` when the grid skips it: final, not forced, and (with
        ``save_model``) an ok run whose model was kept; else None (the cell is run)."""
        existing = None if self.options.force else self.store.read(key)
        if existing is None or existing.status not in FINAL_STATUSES:
            return None
        if self.options.save_model and existing.status == "ok" and not self.store.model_path(key).exists():
            return None  # a finished ok run whose model was not kept is run again
        return existing

    def run_one(self, key: RunKey) -> RunResult | None:
        """Train and evaluate one cell, write its result (whatever happens) and return it.
        Under ``torch.distributed`` every rank trains; only rank 0 evaluates, writes and
        returns the result (the others return None).

        When the result cannot be written to the results folder (disk full, permissions
        changed during the run), it is written to a fallback file instead and
        :class:`ResultNotSavedError` is raised carrying the result and that file's path.
        KeyboardInterrupt is not caught: the checkpoint stays and the next run resumes."""
        device = self.options.device
        ckpt = self.store.checkpoint_path(key)
        model_file = self.store.model_path(key)
        if distributed.is_main():
            if self.options.force and ckpt.exists():
                ckpt.unlink()
            if model_file.exists():  # a kept model belongs to the result beside it, which is redone
                model_file.unlink()
            ranks_file = self.store.ranks_path(key)
            if ranks_file.exists():  # so are the per-query ranks
                ranks_file.unlink()
        else:
            return self._train_only(key, ckpt)
        distributed.barrier()  # the other ranks look for the checkpoint after this
        created = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
        parts: dict = {"status": "failed"}
        facts = None
        query_ranks = None
        reset_peak_memory(device)
        t0 = time.perf_counter()
        try:
            dataset = self.dataset(key.protocol, key.dataset)
            facts = dataset.describe()
            composer = self.build_composer(key, dataset)
            parts["params"] = ParamCounts(**composer.parameter_counts())
            parts["pretrained_weights"] = composer.pretrained_weights()
            parts["train"] = train(
                composer, dataset, key.protocol, key.seed,
                checkpoint=ckpt, checkpoint_every=self.options.checkpoint_every,
                checkpoint_seconds=self.options.checkpoint_seconds,
                workers=self.options.workers, compile=self.options.compile,
            )
            ev = evaluate(
                composer, dataset, key.protocol.ks,
                batch_size=key.protocol.eval_batch_size, chunk=key.protocol.eval_chunk,
            )
            parts["metrics"] = Metrics(overall=ev.overall, groups=ev.groups)
            query_ranks = ev.query_ranks()
            parts["eval"] = EvalStats(
                seconds=ev.seconds,
                num_queries=ev.num_queries,
                gallery_size=ev.gallery_size,
                queries_per_second=ev.num_queries / ev.seconds if ev.seconds else 0.0,
                extra={
                    "embed_seconds": ev.embed_seconds,
                    "embed_images_per_second": ev.embed_images_per_second,
                    "rank_seconds": ev.rank_seconds,
                    "rank_queries_per_second": ev.rank_queries_per_second,
                    "chance": ev.chance,
                },
            )
            if self.options.save_model:
                state = {k: v.detach().cpu() if isinstance(v, torch.Tensor) else v
                         for k, v in composer.state_dict().items()}
                size = atomic_torch_save(model_file, state)
                parts["saved_model"] = SavedModel(model_file.relative_to(self.store.root).as_posix(), size)
            parts["status"] = "ok"
        except (DivergedError, NonFiniteEmbeddingError) as exc:
            parts.update(status="diverged", error=str(exc))
        except Exception as exc:  # failure isolation: record and go on
            parts.update(status="failed", error=f"{type(exc).__name__}: {exc}",
                         traceback=traceback.format_exc())
            log.error("%s failed: %s", key, parts["error"])
        if parts["status"] == "ok" and query_ranks is not None:
            try:  # beside the result, before it: a result never names a ranks file not yet written
                parts["ranks"] = self.store.write_ranks(key, query_ranks)
            except OSError as exc:
                log.warning("%s: could not write its per-query ranks to %s (%s); the result is kept "
                            "without them (no interval on the leaderboard)", key, self.store.ranks_path(key), exc)
        result = RunResult(
            **self._identity(key, facts),
            **parts,
            created=created,
            wall_seconds=time.perf_counter() - t0,
            peak_memory_mb=peak_memory_mb(device),
        )
        try:
            self.store.write(key, result)
        except (OSError, ValueError, TypeError) as exc:  # no space, no permission, a bad value
            raise ResultNotSavedError(key, result, self.store.path(key), exc,
                                      self._save_fallback(key, result)) from exc
        if ckpt.exists():
            ckpt.unlink()
        if result.status == "failed" and distributed.active():
            # the other ranks may wait in a collective that rank 0 never reaches: end them all
            raise RuntimeError(f"{key} failed on rank 0 under torch.distributed (recorded in "
                               f"{self.store.path(key)}): {result.error}")
        return result

    def _train_only(self, key: RunKey, ckpt: Path) -> None:
        """A rank other than 0 under ``torch.distributed``: train its slices with the others
        (rank 0 evaluates and writes the result). A divergence is seen by every rank alike;
        any other error ends the process, so that the launcher stops every rank."""
        distributed.barrier()  # rank 0 has removed what --force removes
        dataset = self.dataset(key.protocol, key.dataset)
        composer = self.build_composer(key, dataset)
        try:
            train(composer, dataset, key.protocol, key.seed, checkpoint=ckpt,
                  checkpoint_every=self.options.checkpoint_every,
                  checkpoint_seconds=self.options.checkpoint_seconds,
                  workers=self.options.workers, compile=self.options.compile)
        except DivergedError:
            pass
        return None

    def _save_fallback(self, key: RunKey, result: RunResult) -> Path | None:
        """Write ``result`` under ``<cache>/unsaved-results/``, else under the system's
        temporary folder; returns the file, or None when neither can be written."""
        rel = key.relpath().with_suffix(".json")
        for base in (Path(self.options.cache_dir), Path(tempfile.gettempdir()) / "cirbench"):
            path = base / "unsaved-results" / rel
            try:
                atomic_write_json(path, result.to_json())
                return path
            except (OSError, ValueError, TypeError) as exc:
                log.warning("could not write the result of %s to %s either: %s", key, path, exc)
        return None

    def _identity(self, key: RunKey, facts: dict | None) -> dict:
        """The fields of a result that say what was run, where and with which code."""
        reg = self.registry

        def who(kind: str, name: str, facts: dict | None = None) -> ProviderRef:
            try:
                p = reg.provider(kind, name)
            except KeyError:
                return ProviderRef(name, facts=facts)
            return ProviderRef(name, p.plugin, p.distribution, p.version, facts)

        return {
            "protocol": ProtocolRef.of(key.protocol),
            "dataset": who("dataset", key.dataset, facts),
            "composer": who("composer", key.composer),
            "seed": key.seed,
            "device": describe_device(self.options.device),
            "versions": package_versions(),
            "plugins": dict(sorted(reg.distributions.items())),
            "cirbench_version": cirbench.__version__,
            "git_commit": git_commit(),
        }


@dataclass(frozen=True)
class CellStatus:
    """Where one cell of a grid stands in a results folder (``cirbench status``).

    ``state`` is ``done`` (an ok result), ``failed``, ``diverged``, ``running`` (claimed by a
    live runner: ``claim``) or ``pending`` (no result yet). ``result`` is the stored result;
    ``claim`` the claim file's content, also when it is stale (``stale`` True: its runner is
    gone and the next runner takes it over)."""

    key: RunKey
    state: str
    result: RunResult | None = None
    claim: Claim | None = None
    stale: bool = False


def grid_status(store: ResultsStore, keys: Iterable[RunKey],
                stale_after: float = STALE_AFTER_SECONDS) -> list[CellStatus]:
    """The :class:`CellStatus` of each of ``keys`` in ``store``, plus every other cell of the
    same protocols that has a result or claim file there (a run of a composer or dataset
    outside ``keys``), in the order of ``keys`` then of the files."""
    keys = list(dict.fromkeys(keys))
    seen = set(keys)
    for protocol in dict.fromkeys(k.protocol for k in keys):
        folder = store.root / protocol.label
        files = sorted([*folder.glob("*/*/seed*.json"), *folder.glob("*/*/seed*.claim")]) if folder.is_dir() else []
        for path in files:
            stem = path.name.split(".", 1)[0]
            if not stem[4:].isdigit():
                continue
            key = RunKey(protocol, path.parent.parent.name, path.parent.name, int(stem[4:]))
            if key not in seen:
                seen.add(key)
                keys.append(key)
    out = []
    for key in keys:
        result = store.read(key)
        claim = read_claim(store.claim_path(key))
        stale = claim is not None and claim.stale(stale_after)
        if claim is not None and not stale:
            state = "running"
        elif result is None:
            state = "pending"
        else:
            state = {"ok": "done"}.get(result.status, result.status)
        out.append(CellStatus(key, state, result, claim, stale))
    return out
