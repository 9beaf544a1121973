"""The results store: one JSON file per (protocol, dataset, composer, seed), and the typed
record it holds.

Layout under the results folder::

    <protocol>@<hash>/<dataset>/<composer>/seed<N>.json    the result (written atomically)
    <protocol>@<hash>/<dataset>/<composer>/seed<N>.ranks.npz  per-query ranks and top-K ids
                                                           (:class:`QueryRanks`; referenced with
                                                           its SHA-256 as the result's ``ranks``)
    <protocol>@<hash>/<dataset>/<composer>/seed<N>.ckpt    training checkpoint while running
    <protocol>@<hash>/<dataset>/<composer>/seed<N>.claim   who runs it now (cirbench.claims)
    <protocol>@<hash>/<dataset>/<composer>/seed<N>.model.pt  the trained state_dict, only with
                                                           ``cirbench run --save-model``

This module is the one place that knows the result schema: :class:`RunResult` (with its parts)
is built by the runner, written by :meth:`ResultsStore.write` and read back by
:func:`read_result` / :class:`ResultsStore`; every other module uses its attributes.

Reading is tolerant: a file that is not valid JSON, not a JSON object, has an unknown
``schema`` version, or misses or mistypes a field is skipped with a warning naming the file
and the field (the runner then treats its cell as not done; the leaderboard leaves it out).
Writing is atomic and refuses a record that would not read back.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

from cirbench.protocol import Protocol
from cirbench.storage import atomic_write_bytes, atomic_write_json

log = logging.getLogger(__name__)

#: The layout version of a result file. Files of another version are skipped with a warning.
SCHEMA_VERSION = 1
STATUSES = ("ok", "failed", "diverged")
#: Statuses that are final: a rerun skips them unless forced. Failed runs are retried.
FINAL_STATUSES = ("ok", "diverged")


class ResultSchemaError(ValueError):
    """A result does not follow the schema; the message names the field (``metrics.overall``)."""


class ResultsNotWritableError(OSError):
    """The results folder (or a run's sub-folder) cannot be created or written."""


# --------------------------------------------------------------------------- validation helpers


def _describe(value: Any) -> str:
    """``null``, ``integer 42``, ``string "a"``, ``array``: a JSON value for a message."""
    text = json.dumps(value) if isinstance(value, (str, int, float, bool)) else ""
    kind = {type(None): "null", bool: "boolean", int: "integer", float: "number", str: "string",
            list: "array", dict: "object"}.get(type(value), type(value).__name__)
    return f"{kind} {text}" if text and len(text) <= 40 else kind


def _bad(where: str, expected: str, value: Any) -> ResultSchemaError:
    return ResultSchemaError(f"field {where!r}: expected {expected}, got {_describe(value)}")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return (_is_int(v) or isinstance(v, float)) and math.isfinite(v)


def _check(where: str, value: Any, kind: str) -> Any:
    """``value`` if it is of ``kind`` (str, int, nonneg-int, number, object, array; ``?`` suffix:
    or null), else :class:`ResultSchemaError` naming ``where``."""
    if kind.endswith("?"):
        if value is None:
            return None
        kind = kind[:-1]
    ok = {
        "str": lambda v: isinstance(v, str),
        "int": _is_int,
        "nonneg-int": lambda v: _is_int(v) and v >= 0,
        "number": _is_number,
        "object": lambda v: isinstance(v, dict),
        "array": lambda v: isinstance(v, list),
    }[kind](value)
    if not ok:
        expected = {"str": "a string", "int": "an integer", "nonneg-int": "an integer >= 0",
                    "number": "a finite number", "object": "an object", "array": "an array"}[kind]
        raise _bad(where, expected, value)
    return value


def _get(obj: Mapping, where: str, name: str, kind: str, required: bool = True) -> Any:
    """Field ``name`` of ``obj`` (at ``where``), checked against ``kind``; a missing optional
    field is None."""
    path = f"{where}.{name}" if where else name
    if name not in obj:
        if required:
            raise ResultSchemaError(f"missing field {path!r}")
        return None
    return _check(path, obj[name], kind)


def _str_map(where: str, value: Any, kind: str) -> dict[str, Any]:
    """An object whose values are all of ``kind``."""
    _check(where, value, "object")
    for k, v in value.items():
        _check(f"{where}.{k}", v, kind)
    return dict(value)


def _drop_none(d: dict) -> dict:
    return {k: v for k, v in d.items() if v is not None}


# --------------------------------------------------------------------------- the record


@dataclass(frozen=True)
class ProtocolRef:
    """The protocol a result was measured under: name, hash, version and every field."""

    name: str
    hash: str
    version: int
    fields: dict[str, Any]

    @classmethod
    def of(cls, protocol: Protocol) -> "ProtocolRef":
        return cls(protocol.name, protocol.hash, protocol.version, protocol.as_dict())

    @property
    def label(self) -> str:
        """``name@hash``, as in :attr:`cirbench.Protocol.label`."""
        return f"{self.name}@{self.hash}"

    def to_json(self) -> dict:
        return {"name": self.name, "hash": self.hash, "version": self.version, "fields": self.fields}

    @classmethod
    def from_json(cls, obj: Any, where: str = "protocol") -> "ProtocolRef":
        _check(where, obj, "object")
        return cls(_get(obj, where, "name", "str"), _get(obj, where, "hash", "str"),
                   _get(obj, where, "version", "int"), _get(obj, where, "fields", "object"))


@dataclass(frozen=True)
class ProviderRef:
    """A dataset or composer and the plugin providing it (plugin, distribution and version
    are None when the name was not registered); ``facts`` is the dataset's ``describe()``."""

    name: str
    plugin: str | None = None
    distribution: str | None = None
    version: str | None = None
    facts: dict[str, Any] | None = None

    def to_json(self) -> dict:
        return _drop_none(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, obj: Any, where: str) -> "ProviderRef":
        _check(where, obj, "object")
        return cls(
            name=_get(obj, where, "name", "str"),
            plugin=_get(obj, where, "plugin", "str", required=False),
            distribution=_get(obj, where, "distribution", "str", required=False),
            version=_get(obj, where, "version", "str", required=False),
            facts=_get(obj, where, "facts", "object", required=False),
        )


@dataclass(frozen=True)
class Metrics:
    """Recall@K (fractions in [0, 1]) over all queries and per query group:
    ``overall = {"R@1": 0.5, ...}``, ``groups = {"add": {"R@1": ...}, ...}``."""

    overall: dict[str, float]
    groups: dict[str, dict[str, float]] = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"overall": self.overall, "groups": self.groups}

    @classmethod
    def from_json(cls, obj: Any, where: str = "metrics") -> "Metrics":
        _check(where, obj, "object")
        overall = _str_map(f"{where}.overall", _get(obj, where, "overall", "object"), "number")
        groups = _get(obj, where, "groups", "object")
        return cls(overall, {g: _str_map(f"{where}.groups.{g}", v, "number") for g, v in groups.items()})


@dataclass(frozen=True)
class ParamCounts:
    """Parameter counts of the composer (``total = trainable + frozen``), as
    :meth:`cirbench.Composer.parameter_counts` gives them: ``trainable`` the parameters its
    optimisers train, ``frozen_pretrained`` the part of ``frozen`` in pretrained encoders
    kept frozen (absent from results written before it was counted)."""

    total: int
    trainable: int
    frozen: int
    frozen_pretrained: int | None = None

    def to_json(self) -> dict:
        d = dataclasses.asdict(self)
        if self.frozen_pretrained is None:
            del d["frozen_pretrained"]
        return d

    @classmethod
    def from_json(cls, obj: Any, where: str = "params") -> "ParamCounts":
        _check(where, obj, "object")
        return cls(*(_get(obj, where, f, "nonneg-int") for f in ("total", "trainable", "frozen")),
                   frozen_pretrained=_get(obj, where, "frozen_pretrained", "nonneg-int", required=False))


@dataclass(frozen=True)
class TrainStats:
    """What training reports (:func:`cirbench.train.train`): steps, time in seconds,
    throughput in samples per second, the final loss per part and the loss history (at most
    ``HISTORY_POINTS`` entries ``{"step": N, part: mean loss, ...}``), and the step it resumed
    from (0 for a fresh run). ``setup`` says how the run was executed, which never decides
    its numbers on the CPU (:func:`cirbench.train.train`: ``input`` ``device-table`` or
    ``loader``, ``workers``, ``precision``, ``compiled`` submodules, ``channels_last``,
    ``cudnn_benchmark``, and ``data_wait_seconds``, the seconds the loop waited on batches
    this session); ``{}`` in results written before it existed."""

    iterations: int
    seconds: float
    samples_per_second: float
    final_loss: dict[str, float]
    history: list[dict] = field(default_factory=list)
    resumed_from: int = 0
    setup: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)

    to_json = as_dict

    @classmethod
    def from_json(cls, obj: Any, where: str = "train") -> "TrainStats":
        _check(where, obj, "object")
        history = _get(obj, where, "history", "array")
        for i, h in enumerate(history):
            _str_map(f"{where}.history[{i}]", h, "number")
        return cls(
            iterations=_get(obj, where, "iterations", "nonneg-int"),
            seconds=_get(obj, where, "seconds", "number"),
            samples_per_second=_get(obj, where, "samples_per_second", "number"),
            final_loss=_str_map(f"{where}.final_loss", _get(obj, where, "final_loss", "object"), "number"),
            history=history,
            resumed_from=_get(obj, where, "resumed_from", "nonneg-int"),
            setup=_get(obj, where, "setup", "object", required=False) or {},
        )


@dataclass(frozen=True)
class EvalStats:
    """Evaluation cost: seconds, number of queries, gallery size, queries per second, and any
    further measurements in ``extra`` (``{name: JSON value}``, stored beside the others in
    the ``eval`` object, so ``eval`` can grow without a schema change)."""

    seconds: float
    num_queries: int
    gallery_size: int
    queries_per_second: float
    extra: dict[str, Any] = field(default_factory=dict)

    _KNOWN = ("seconds", "num_queries", "gallery_size", "queries_per_second")

    def __post_init__(self) -> None:
        clash = sorted(set(self.extra) & set(self._KNOWN))
        if clash:
            raise ValueError(f"EvalStats.extra must not repeat the named fields: {clash}")

    def to_json(self) -> dict:
        return {**self.extra, **{k: getattr(self, k) for k in self._KNOWN}}

    @classmethod
    def from_json(cls, obj: Any, where: str = "eval") -> "EvalStats":
        _check(where, obj, "object")
        return cls(
            seconds=_get(obj, where, "seconds", "number"),
            num_queries=_get(obj, where, "num_queries", "nonneg-int"),
            gallery_size=_get(obj, where, "gallery_size", "nonneg-int"),
            queries_per_second=_get(obj, where, "queries_per_second", "number"),
            extra={k: v for k, v in obj.items() if k not in cls._KNOWN},
        )


@dataclass(frozen=True)
class SavedModel:
    """The trained ``state_dict`` kept by ``--save-model``: path relative to the results
    folder (POSIX separators) and size in bytes."""

    path: str
    bytes: int

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, obj: Any, where: str = "saved_model") -> "SavedModel":
        _check(where, obj, "object")
        return cls(_get(obj, where, "path", "str"), _get(obj, where, "bytes", "nonneg-int"))


class RanksFileError(ValueError):
    """A per-query ranks file is missing, altered (checksum) or malformed; names the file."""


@dataclass(frozen=True)
class QueryRanks:
    """What an evaluation keeps per query, in the dataset's ``queries()`` order, so that every
    Recall@K (overall, per group, resampled) can be recomputed without the model.

    ``ranks`` ``[Q]`` int64: the 0-based rank of the best correct target
    (:func:`cirbench.metrics.rank_queries`; a query hits at K when ``rank < K``);
    ``top_k`` ``[Q, K]`` int64: the K best gallery ids, best first
    (:func:`cirbench.metrics.top_k_ids`), padded with -1 where a query is ranked among
    fewer than K entries; ``groups`` ``[Q]`` str: each query's group; ``references`` ``[Q]``
    int64: each query's reference image id (to check that a dataset's queries are the ones
    ranked). Raises ``ValueError`` when the lengths differ."""

    ranks: Any
    top_k: Any
    groups: Any
    references: Any

    def __post_init__(self) -> None:
        import numpy as np

        for name, dtype in (("ranks", np.int64), ("top_k", np.int64), ("references", np.int64)):
            object.__setattr__(self, name, np.asarray(getattr(self, name), dtype=dtype))
        object.__setattr__(self, "groups", np.asarray(self.groups, dtype=str))
        q = len(self.ranks)
        if self.ranks.ndim != 1 or self.top_k.ndim != 2 or len(self.top_k) != q or len(self.groups) != q \
                or len(self.references) != q:
            raise ValueError(f"QueryRanks: ranks {self.ranks.shape}, top_k {self.top_k.shape}, groups "
                             f"{self.groups.shape}, references {self.references.shape} do not describe the "
                             "same queries")

    @property
    def k(self) -> int:
        return int(self.top_k.shape[1])

    def recall(self, ks: Iterable[int], group: str | None = None) -> dict[str, float]:
        """``{"R@K": fraction}`` recomputed from the ranks, over all queries or one group."""
        ranks = self.ranks if group is None else self.ranks[self.groups == group]
        if ranks.size == 0:
            raise ValueError(f"no query in group {group!r}")
        return {f"R@{k}": float((ranks < k).mean()) for k in ks}

    def to_bytes(self) -> bytes:
        import io

        import numpy as np

        buf = io.BytesIO()
        np.savez_compressed(buf, ranks=self.ranks, top_k=self.top_k, groups=self.groups,
                            references=self.references)
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes, where: str = "ranks file") -> "QueryRanks":
        import io

        import numpy as np

        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as z:
                missing = [n for n in ("ranks", "top_k", "groups", "references") if n not in z.files]
                if missing:
                    raise RanksFileError(f"{where}: missing array {missing[0]!r}")
                return cls(z["ranks"], z["top_k"], z["groups"], z["references"])
        except RanksFileError:
            raise
        except (ValueError, OSError, KeyError) as exc:
            raise RanksFileError(f"{where}: not a readable ranks file ({exc})") from exc


@dataclass(frozen=True)
class RanksRef:
    """The result's pointer to its :class:`QueryRanks` file: ``path`` relative to the results
    folder (POSIX separators), its ``sha256`` (hex), the number of queries and K (the width
    of the stored top-K lists: the protocol's largest K)."""

    path: str
    sha256: str
    num_queries: int
    k: int

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, obj: Any, where: str = "ranks") -> "RanksRef":
        _check(where, obj, "object")
        return cls(_get(obj, where, "path", "str"), _get(obj, where, "sha256", "str"),
                   _get(obj, where, "num_queries", "nonneg-int"), _get(obj, where, "k", "nonneg-int"))


@dataclass(frozen=True)
class RunResult:
    """The result of one run, as stored in ``seed<N>.json`` (schema :data:`SCHEMA_VERSION`).

    ``status`` is ``ok`` (then ``metrics``, ``params``, ``train`` and ``eval`` are set),
    ``failed`` (``error`` says why, ``traceback`` where) or ``diverged`` (``error`` gives the
    step and loss). Times are in seconds, memory in MiB (CUDA peak allocation, or the process's
    peak resident set on a CPU). ``ranks`` points to the per-query ranks file (results written
    before it existed have none: the leaderboard then shows no interval for them).
    ``train``, ``eval``, ``saved_model``, ``ranks`` and ``traceback`` are left out of the JSON
    when None; everything else is always written.
    """

    status: str
    protocol: ProtocolRef
    dataset: ProviderRef
    composer: ProviderRef
    seed: int
    device: str
    versions: dict[str, str]
    plugins: dict[str, str]
    cirbench_version: str
    git_commit: str | None
    created: str  # ISO 8601, UTC
    wall_seconds: float
    peak_memory_mb: float
    error: str | None = None
    metrics: Metrics | None = None
    params: ParamCounts | None = None
    pretrained_weights: list[str] = field(default_factory=list)
    train: TrainStats | None = None
    eval: EvalStats | None = None
    saved_model: SavedModel | None = None
    ranks: RanksRef | None = None
    traceback: str | None = None
    schema: int = SCHEMA_VERSION

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ResultSchemaError(f"field 'status': expected one of {', '.join(STATUSES)}, "
                                    f"got {_describe(self.status)}")
        if self.status == "ok":
            missing = [f for f in ("metrics", "params", "train", "eval") if getattr(self, f) is None]
            if missing:
                raise ResultSchemaError(f"missing field {missing[0]!r} (required when status is ok)")
        elif not isinstance(self.error, str):
            raise ResultSchemaError(f"field 'error': expected a string when status is {self.status}, "
                                    f"got {_describe(self.error)}")

    def matches(self, key: "RunKey") -> bool:
        """Whether this result is the one of ``key`` (protocol hash, dataset, composer, seed)."""
        return (self.protocol.name, self.protocol.hash, self.dataset.name, self.composer.name, self.seed) == (
            key.protocol.name, key.protocol.hash, key.dataset, key.composer, key.seed)

    def to_json(self) -> dict:
        """The JSON object written to the result file."""
        out: dict[str, Any] = {
            "schema": self.schema,
            "status": self.status,
            "error": self.error,
            "protocol": self.protocol.to_json(),
            "dataset": self.dataset.to_json(),
            "composer": self.composer.to_json(),
            "seed": self.seed,
            "metrics": self.metrics.to_json() if self.metrics else None,
            "params": self.params.to_json() if self.params else None,
            "pretrained_weights": list(self.pretrained_weights),
            "device": self.device,
            "versions": self.versions,
            "plugins": self.plugins,
            "cirbench_version": self.cirbench_version,
            "git_commit": self.git_commit,
            "created": self.created,
            "wall_seconds": self.wall_seconds,
            "peak_memory_mb": self.peak_memory_mb,
        }
        for name in ("train", "eval", "saved_model", "ranks"):
            part = getattr(self, name)
            if part is not None:
                out[name] = part.to_json()
        if self.traceback is not None:
            out["traceback"] = self.traceback
        return out

    @classmethod
    def from_json(cls, obj: Any) -> "RunResult":
        """Parse and validate a result object; raises :class:`ResultSchemaError` naming the
        first missing or mistyped field (or the unknown schema version)."""
        if not isinstance(obj, dict):
            raise ResultSchemaError(f"expected a JSON object, got {_describe(obj)}")
        schema = _get(obj, "", "schema", "int")
        if schema != SCHEMA_VERSION:
            raise ResultSchemaError(f"unknown schema version {schema} (this cirbench reads "
                                    f"schema {SCHEMA_VERSION}; written by another cirbench version?)")

        def opt(name: str, part) -> Any:
            value = _get(obj, "", name, "object?", required=False)
            return None if value is None else part.from_json(value, name)

        metrics = _get(obj, "", "metrics", "object?")
        params = _get(obj, "", "params", "object?")
        weights = _get(obj, "", "pretrained_weights", "array")
        for i, w in enumerate(weights):
            _check(f"pretrained_weights[{i}]", w, "str")
        return cls(
            schema=schema,
            status=_get(obj, "", "status", "str"),
            error=_get(obj, "", "error", "str?"),
            protocol=ProtocolRef.from_json(_get(obj, "", "protocol", "object")),
            dataset=ProviderRef.from_json(_get(obj, "", "dataset", "object"), "dataset"),
            composer=ProviderRef.from_json(_get(obj, "", "composer", "object"), "composer"),
            seed=_get(obj, "", "seed", "nonneg-int"),
            metrics=None if metrics is None else Metrics.from_json(metrics),
            params=None if params is None else ParamCounts.from_json(params),
            pretrained_weights=list(weights),
            device=_get(obj, "", "device", "str"),
            versions=_str_map("versions", _get(obj, "", "versions", "object"), "str"),
            plugins=_str_map("plugins", _get(obj, "", "plugins", "object"), "str"),
            cirbench_version=_get(obj, "", "cirbench_version", "str"),
            git_commit=_get(obj, "", "git_commit", "str?"),
            created=_get(obj, "", "created", "str"),
            wall_seconds=_get(obj, "", "wall_seconds", "number"),
            peak_memory_mb=_get(obj, "", "peak_memory_mb", "number"),
            train=opt("train", TrainStats),
            eval=opt("eval", EvalStats),
            saved_model=opt("saved_model", SavedModel),
            ranks=opt("ranks", RanksRef),
            traceback=_get(obj, "", "traceback", "str?", required=False),
        )


def read_result(path: Path | str) -> RunResult | None:
    """The result stored at ``path``; None when there is no file, and None with a warning
    naming the file and what is wrong when it cannot be read or does not follow the schema."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        log.warning("ignoring unreadable result file %s: %s", path, exc)
        return None
    try:
        return RunResult.from_json(obj)
    except ResultSchemaError as exc:
        log.warning("ignoring result file %s: %s", path, exc)
        return None


# --------------------------------------------------------------------------- the store


@dataclass(frozen=True)
class RunKey:
    """The identity of one run. Raises ``ValueError`` for a seed that is not an int >= 0."""

    protocol: Protocol
    dataset: str
    composer: str
    seed: int

    def __post_init__(self) -> None:
        if not _is_int(self.seed) or self.seed < 0:
            raise ValueError(f"seed must be an integer >= 0, got {self.seed!r}")

    def relpath(self) -> Path:
        return Path(self.protocol.label, self.dataset, self.composer, f"seed{self.seed}")

    def __str__(self) -> str:
        return f"{self.composer} on {self.dataset} ({self.protocol.label}, seed {self.seed})"


class ResultsStore:
    """Reads and writes results under one folder."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)

    def path(self, key: RunKey) -> Path:
        return self.root / key.relpath().with_suffix(".json")

    def checkpoint_path(self, key: RunKey) -> Path:
        return self.root / key.relpath().with_suffix(".ckpt")

    def claim_path(self, key: RunKey) -> Path:
        """The claim of a runner running ``key`` now (:mod:`cirbench.claims`)."""
        return self.root / key.relpath().with_suffix(".claim")

    def model_path(self, key: RunKey) -> Path:
        """Where ``cirbench run --save-model`` keeps the run's trained ``state_dict``; the
        result records it as ``saved_model`` (relative to the results folder)."""
        return self.root / key.relpath().with_suffix(".model.pt")

    def ranks_path(self, key: RunKey) -> Path:
        """The per-query ranks file of ``key`` (:class:`QueryRanks`)."""
        return self.root / key.relpath().with_suffix(".ranks.npz")

    def write_ranks(self, key: RunKey, ranks: QueryRanks) -> RanksRef:
        """Write ``ranks`` atomically as ``key``'s ranks file; returns the reference (with its
        SHA-256) for the result. Raises ``OSError`` when it cannot be written."""
        import hashlib

        data = ranks.to_bytes()
        path = self.ranks_path(key)
        atomic_write_bytes(path, data)
        return RanksRef(path.relative_to(self.root).as_posix(), hashlib.sha256(data).hexdigest(),
                        len(ranks.ranks), ranks.k)

    def load_ranks(self, result: RunResult) -> QueryRanks | None:
        """The :class:`QueryRanks` of ``result``; None when it has none (an older result).
        Raises :class:`RanksFileError` naming the file when it is missing, its checksum
        differs from the one recorded, or it does not hold ``ranks.num_queries`` queries."""
        import hashlib

        ref = result.ranks
        if ref is None:
            return None
        path = self.root / ref.path
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise RanksFileError(f"{path}: cannot read the ranks file of this result ({exc.strerror or exc})") from exc
        digest = hashlib.sha256(data).hexdigest()
        if digest != ref.sha256:
            raise RanksFileError(f"{path}: SHA-256 {digest[:12]}... differs from the {ref.sha256[:12]}... "
                                 "recorded in its result (changed or replaced since)")
        ranks = QueryRanks.from_bytes(data, str(path))
        if len(ranks.ranks) != ref.num_queries or ranks.k != ref.k:
            raise RanksFileError(f"{path}: {len(ranks.ranks)} queries x top-{ranks.k}, its result records "
                                 f"{ref.num_queries} x top-{ref.k}")
        return ranks

    def read(self, key: RunKey) -> RunResult | None:
        """The stored result of ``key``, or None: no file, or (with a warning naming the
        file) one that cannot be read, breaks the schema or holds another run's result."""
        path = self.path(key)
        result = read_result(path)
        if result is not None and not result.matches(key):
            log.warning("ignoring result file %s: it holds the result of %s on %s (%s, seed %s), "
                        "not of %s", path, result.composer.name, result.dataset.name,
                        result.protocol.label, result.seed, key)
            return None
        return result

    def write(self, key: RunKey, result: RunResult) -> Path:
        """Write ``result`` as the result of ``key``, atomically; returns the file.

        Raises ``ValueError`` when ``result`` is not ``key``'s or would not read back, and
        ``OSError`` when the file cannot be written (the old file, if any, is kept)."""
        if not result.matches(key):
            raise ValueError(f"result of {result.composer.name} on {result.dataset.name} "
                             f"(seed {result.seed}) written as the result of {key}")
        obj = result.to_json()
        RunResult.from_json(obj)  # what is written reads back
        path = self.path(key)
        atomic_write_json(path, obj)
        return path

    def check_writable(self, keys: Iterable[RunKey] = ()) -> None:
        """Check that a file can be created in the results folder and in the folder of each
        of ``keys``, by creating and removing a temporary file there. Folders created for the
        check stay (empty until their runs write into them): removing them again would race
        with another runner probing or writing the same folder. Raises :class:`ResultsNotWritableError` naming the folder
        and the reason (a path component that is a file, no permission, read-only disk...)."""
        folders = dict.fromkeys([self.root, *(self.path(k).parent for k in keys)])
        for folder in folders:
            _probe_folder(folder)

    def __iter__(self) -> Iterator[RunResult]:
        """Every readable result under the folder (other files are skipped, with a warning)."""
        if not self.root.is_dir():
            return
        for path in sorted(self.root.glob("*/*/*/seed*.json")):
            result = read_result(path)
            if result is None:
                continue
            where = (result.protocol.label, result.dataset.name, result.composer.name, f"seed{result.seed}.json")
            if path.relative_to(self.root).parts != where:
                log.warning("ignoring result file %s: it holds the result of %s on %s (%s, seed %s), "
                            "which belongs in %s", path, result.composer.name, result.dataset.name,
                            result.protocol.label, result.seed, Path(*where))
                continue
            yield result


def _probe_folder(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".cirbench-write-check.", suffix=".tmp", dir=folder)
        os.close(fd)
        os.unlink(tmp)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        blocker = next((p for p in (folder, *folder.parents) if p.exists() and not p.is_dir()), None)
        if blocker is not None:
            reason += f": {blocker} is a file"
        elif exc.filename and Path(exc.filename) != folder:
            reason += f": {exc.filename}"
        raise ResultsNotWritableError(f"cannot write results in {folder} ({reason})") from exc
