"""The grid runner: protocol x dataset x composer x seed, one result file per run.

Before training, the grid checks that its result folders can be written. Finished runs are
skipped (``force`` redoes them; a result file that cannot be read is redone, with a warning);
a composer that raises is recorded as ``failed`` and the grid goes on; a non-finite loss or
embedding ends that run as ``diverged``. An interrupted run resumes from its checkpoint the
next time. A result that cannot be written after its run (disk full, permissions changed) is
written under ``<cache>/unsaved-results/`` (else the system's temporary folder) instead, and
the grid goes on (:class:`ResultNotSavedError`, ``GridReport.unsaved``).
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
from cirbench.composer import ComposerContext
from cirbench.data.contract import CIRDataset, DatasetTypeError
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
from cirbench.train import CHECKPOINT_SECONDS, DivergedError, seed_everything, train

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
            try:
                ds = spec.create(protocol, self.options.cache_dir, self.options.data)
            except DatasetTypeError as exc:
                raise DatasetTypeError(f"{exc} ({self.registry.provider('dataset', name)})") from exc
            self._datasets[key] = ds
        return self._datasets[key]

    def run_grid(
        self,
        protocol: Protocol,
        datasets: Iterable[str],
        composers: Iterable[str],
        seeds: Iterable[int],
        on_event: Callable[[str, RunKey, RunResult | None], None] = lambda *_: None,
    ) -> GridReport:
        """Run every cell; ``on_event(kind, key, result)`` is told ``start``, ``skip`` and
        ``done`` for each, so a front end can report progress.

        Before anything is built or trained, checks that the result folder of every cell to
        run can be written (raises :class:`cirbench.results.ResultsNotWritableError`
        otherwise). A result file that cannot be read counts as not done (a warning names it)
        and is redone."""
        keys = [RunKey(protocol, ds, comp, seed) for ds in datasets for comp in composers for seed in seeds]
        plan = [(key, self._finished(key)) for key in keys]
        self.store.check_writable([key for key, finished in plan if finished is None])
        report = GridReport()
        for key, finished in plan:
            if finished is not None:
                report.skipped.append(key)
                on_event("skip", key, finished)
                continue
            on_event("start", key, None)
            try:
                result = self.run_one(key)
            except ResultNotSavedError as exc:
                log.error("%s", exc)
                report.unsaved.append(exc)
                result = exc.result
            report.ran.append(key)
            if result.status == "failed":
                report.failed.append((key, result.error or ""))
            elif result.status == "diverged":
                report.diverged.append(key)
            on_event("done", key, result)
        return report

    def build_composer(self, key: RunKey, dataset: CIRDataset) -> "cirbench.Composer":
        """The composer of ``key``, untrained, on the run's device (as a run builds it; seed
        first with :func:`cirbench.train.seed_everything` for the run's initialisation)."""
        device = self.options.device
        spec = self.registry.composer(key.composer)
        ctx = ComposerContext(
            protocol=key.protocol,
            train_texts=dataset.train_texts(),
            base_loss=dataset.base_loss,
            dataset=key.dataset,
            device=str(device),
            cache_dir=self.options.cache_dir,
        )
        composer = spec.build(ctx)
        if not isinstance(composer, cirbench.Composer):
            raise TypeError(
                f"composer {key.composer!r}: build returned {type(composer).__name__}, "
                "expected a cirbench.Composer"
            )
        return composer.to(device)

    def _finished(self, key: RunKey) -> RunResult | None:
        """The stored result of ``key`` when the grid skips it: final, not forced, and (with
        ``save_model``) an ok run whose model was kept; else None (the cell is run)."""
        existing = None if self.options.force else self.store.read(key)
        if existing is None or existing.status not in FINAL_STATUSES:
            return None
        if self.options.save_model and existing.status == "ok" and not self.store.model_path(key).exists():
            return None  # a finished ok run whose model was not kept is run again
        return existing

    def run_one(self, key: RunKey) -> RunResult:
        """Train and evaluate one cell, write its result (whatever happens) and return it.

        When the result cannot be written to the results folder (disk full, permissions
        changed during the run), it is written to a fallback file instead and
        :class:`ResultNotSavedError` is raised carrying the result and that file's path.
        KeyboardInterrupt is not caught: the checkpoint stays and the next run resumes."""
        device = self.options.device
        ckpt = self.store.checkpoint_path(key)
        if self.options.force and ckpt.exists():
            ckpt.unlink()
        model_file = self.store.model_path(key)
        if model_file.exists():  # a kept model belongs to the result beside it, which is redone
            model_file.unlink()
        created = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
        parts: dict = {"status": "failed"}
        facts = None
        reset_peak_memory(device)
        t0 = time.perf_counter()
        try:
            dataset = self.dataset(key.protocol, key.dataset)
            facts = dataset.describe()
            seed_everything(key.seed)
            composer = self.build_composer(key, dataset)
            parts["params"] = ParamCounts(**composer.parameter_counts())
            parts["pretrained_weights"] = composer.pretrained_weights()
            parts["train"] = train(
                composer, dataset, key.protocol, key.seed,
                checkpoint=ckpt, checkpoint_every=self.options.checkpoint_every,
                checkpoint_seconds=self.options.checkpoint_seconds,
            )
            ev = evaluate(
                composer, dataset, key.protocol.ks,
                batch_size=key.protocol.eval_batch_size, chunk=key.protocol.eval_chunk,
            )
            parts["metrics"] = Metrics(overall=ev.overall, groups=ev.groups)
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
        return result

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
