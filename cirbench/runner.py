"""The grid runner: protocol x dataset x composer x seed, one result file per run.

Finished runs are skipped (``force`` redoes them); a composer that raises is recorded as
``failed`` and the grid goes on; a non-finite loss or embedding ends that run as ``diverged``.
An interrupted run resumes from its checkpoint the next time.
"""

from __future__ import annotations

import datetime as dt
import logging
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
from cirbench.results import SCHEMA_VERSION, ResultsStore, RunKey
from cirbench.storage import atomic_torch_save
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


@dataclass
class GridReport:
    """What a grid run did."""

    ran: list[RunKey] = field(default_factory=list)
    skipped: list[RunKey] = field(default_factory=list)
    failed: list[tuple[RunKey, str]] = field(default_factory=list)
    diverged: list[RunKey] = field(default_factory=list)


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
        on_event: Callable[[str, RunKey, dict | None], None] = lambda *_: None,
    ) -> GridReport:
        """Run every cell; ``on_event(kind, key, result)`` is told ``start``, ``skip`` and
        ``done`` for each, so a front end can report progress."""
        report = GridReport()
        for ds in datasets:
            for comp in composers:
                for seed in seeds:
                    key = RunKey(protocol, ds, comp, seed)
                    if not self.options.force and self.store.is_done(key) and not self._model_wanted(key):
                        report.skipped.append(key)
                        on_event("skip", key, self.store.read(key))
                        continue
                    on_event("start", key, None)
                    result = self.run_one(key)
                    report.ran.append(key)
                    if result["status"] == "failed":
                        report.failed.append((key, result["error"]))
                    elif result["status"] == "diverged":
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

    def _model_wanted(self, key: RunKey) -> bool:
        """With ``save_model``: a finished ok run whose model was not kept is run again."""
        if not self.options.save_model or self.store.model_path(key).exists():
            return False
        result = self.store.read(key)
        return result is not None and result.get("status") == "ok"

    def run_one(self, key: RunKey) -> dict:
        """Train and evaluate one cell, write its result (whatever happens) and return it.

        KeyboardInterrupt is not caught: the checkpoint stays and the next run resumes."""
        result = self._skeleton(key)
        device = self.options.device
        ckpt = self.store.checkpoint_path(key)
        if self.options.force and ckpt.exists():
            ckpt.unlink()
        model_file = self.store.model_path(key)
        if model_file.exists():  # a kept model belongs to the result beside it, which is redone
            model_file.unlink()
        reset_peak_memory(device)
        t0 = time.perf_counter()
        try:
            dataset = self.dataset(key.protocol, key.dataset)
            result["dataset"]["facts"] = dataset.describe()
            seed_everything(key.seed)
            composer = self.build_composer(key, dataset)
            result["params"] = composer.parameter_counts()
            result["pretrained_weights"] = composer.pretrained_weights()
            stats = train(
                composer, dataset, key.protocol, key.seed,
                checkpoint=ckpt, checkpoint_every=self.options.checkpoint_every,
                checkpoint_seconds=self.options.checkpoint_seconds,
            )
            result["train"] = stats.as_dict()
            ev = evaluate(
                composer, dataset, key.protocol.ks,
                batch_size=key.protocol.eval_batch_size, chunk=key.protocol.eval_chunk,
            )
            result["metrics"] = {"overall": ev.overall, "groups": ev.groups}
            result["eval"] = {
                "seconds": ev.seconds,
                "num_queries": ev.num_queries,
                "gallery_size": ev.gallery_size,
                "queries_per_second": ev.num_queries / ev.seconds if ev.seconds else 0.0,
            }
            if self.options.save_model:
                state = {k: v.detach().cpu() if isinstance(v, torch.Tensor) else v
                         for k, v in composer.state_dict().items()}
                size = atomic_torch_save(model_file, state)
                result["saved_model"] = {
                    "path": model_file.relative_to(self.store.root).as_posix(),
                    "bytes": size,
                }
            result["status"] = "ok"
        except (DivergedError, NonFiniteEmbeddingError) as exc:
            result["status"] = "diverged"
            result["error"] = str(exc)
        except Exception as exc:  # failure isolation: record and go on
            result["status"] = "failed"
            result["error"] = f"{type(exc).__name__}: {exc}"
            result["traceback"] = traceback.format_exc()
            log.error("%s failed: %s", key, result["error"])
        result["wall_seconds"] = time.perf_counter() - t0
        result["peak_memory_mb"] = peak_memory_mb(device)
        self.store.write(key, result)
        if ckpt.exists():
            ckpt.unlink()
        return result

    def _skeleton(self, key: RunKey) -> dict:
        reg = self.registry

        def who(kind: str, name: str) -> dict:
            try:
                p = reg.provider(kind, name)
            except KeyError:
                return {"name": name}
            return {"name": name, "plugin": p.plugin, "distribution": p.distribution, "version": p.version}

        return {
            "schema": SCHEMA_VERSION,
            "status": "failed",
            "error": None,
            "protocol": {
                "name": key.protocol.name,
                "hash": key.protocol.hash,
                "version": key.protocol.version,
                "fields": key.protocol.as_dict(),
            },
            "dataset": who("dataset", key.dataset),
            "composer": who("composer", key.composer),
            "seed": key.seed,
            "metrics": None,
            "params": None,
            "pretrained_weights": [],
            "device": describe_device(self.options.device),
            "versions": package_versions(),
            "plugins": dict(sorted(reg.distributions.items())),
            "cirbench_version": cirbench.__version__,
            "git_commit": git_commit(),
            "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        }
