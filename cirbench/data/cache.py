"""Every cache cirbench keeps: one home, one key rule, one stale rule.

Kinds, each a sub-folder of the cache directory (``$CIRBENCH_CACHE``, ``--cache-dir``):

==================== =========================================== ==============================
kind                 what                                        API
==================== =========================================== ==============================
``images``           decoded, resized images of a local dataset  :class:`ArrowImageCache`
``generated``        a generated (embedded) dataset              :func:`load_or_generate`
``text-embeddings``  a frozen text encoder's vectors of texts    :func:`load_or_compute_embeddings`
==================== =========================================== ==============================

**Key rule.** A cache lives in ``<cache dir>/<kind>/<name>-<label>-<digest>/``: ``name`` is
the dataset, ``label`` a readable summary, and ``digest`` the SHA-256 (12 hex digits) of
:data:`FORMAT`, the kind, the name and the **key fields**, everything that says what the
cache holds (:class:`CacheKey`):

* images: loader version, transform, the data root's real path (two copies of a dataset under
  different roots never share a cache) and the ordered list of image entries;
* generated: the generator's parameters (version, scale, seed, image size);
* text embeddings: the encoder's settings, its model directory's real path, the texts.

**Stale rule.** A cache built from files records them (:class:`Sources`): the relative path,
size and modification time (ns) of each, and a content digest (BLAKE2b-128) of each when the
files total at most :data:`CONTENT_HASH_LIMIT` bytes (hashing a small dataset or encoder is
cheap; re-reading 200k JPEGs each time a dataset is opened is not, so large sources are
checked by size and time only). On opening, the files are checked again: any difference (a
file changed, replaced or deleted) makes the cache **stale**; it is logged as a warning naming
the files and rebuilt. An image cache whose source image is missing raises the loader's error
(:class:`~cirbench.data.errors.CorruptImageError` naming the file) instead of serving
pixels. A folder whose record (``meta.json``) is missing, unreadable, of another
:data:`FORMAT` or of another key is rebuilt the same way, so old cache folders are harmless.

**Record.** Each folder holds ``meta.json`` (format, kind, name, key fields, ``built_from``:
the data root / generator parameters / encoder, ``entries``, ``created``, ``sources_hashed``),
``sources.npy`` when built from files, and the payload: ``images.arrow`` (images),
``images.npy`` + ``data.json`` (generated), ``embeddings.pt`` (text embeddings).

**Writes** are atomic (:func:`cirbench.storage.atomic_write_folder`): a reader never sees a
half-written cache. :func:`cache_entries` lists, :func:`clear_cache` removes (``cirbench data
cache list|clear``), including leftovers of interrupted builds.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import pickle
import re
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence, TypeVar

import numpy as np

from cirbench.data.decode import ImageTransform, decode_image
from cirbench.data.errors import CorruptImageError
from cirbench.progress import progress_bar
from cirbench.storage import atomic_write_folder, remove_path

log = logging.getLogger(__name__)

FORMAT = 2
"""Bump when the layout of a cache folder or the key rule changes (old folders are rebuilt)."""
KINDS: dict[str, str] = {
    "images": "decoded images of a local dataset",
    "generated": "a generated dataset",
    "text-embeddings": "frozen text embeddings",
}
META_FILE = "meta.json"
SOURCES_FILE = "sources.npy"
CONTENT_HASH_LIMIT = 64 * 2**20
"""Sources totalling at most this many bytes are also checked by content digest."""

_SOURCE_DTYPE = np.dtype([("size", "<i8"), ("mtime_ns", "<i8"), ("digest", "S16")])
#: What reading a damaged cache can raise (a truncated pickle, a torn Arrow or NumPy file):
#: the cache is then stale and rebuilt, never trusted.
_READ_ERRORS = (OSError, ValueError, EOFError, KeyError, TypeError, RuntimeError, pickle.UnpicklingError)
T = TypeVar("T")


class StaleCache(ValueError):
    """A cache folder that does not match what it should hold; the message says why."""


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", str(name)).strip("._") or "cache"


def _digest_lines(lines: Sequence[str]) -> str:
    h = hashlib.sha256()
    for s in lines:
        h.update(str(s).encode("utf-8", "surrogateescape"))
        h.update(b"\n")
    return h.hexdigest()


# --- key ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CacheKey:
    """What a cache holds: ``kind`` (one of :data:`KINDS`), ``name`` (the dataset), ``fields``
    (JSON values; everything that decides the content) and a readable ``label``.

    Raises ``ValueError`` for an unknown kind or fields that are not JSON."""

    kind: str
    name: str
    fields: Mapping[str, Any]
    label: str = ""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"cache kind must be one of {sorted(KINDS)}, got {self.kind!r}")
        json.dumps(dict(self.fields), sort_keys=True, allow_nan=False)

    @property
    def digest(self) -> str:
        blob = json.dumps({"format": FORMAT, "kind": self.kind, "name": self.name,
                           "fields": dict(self.fields)}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]

    @property
    def folder_name(self) -> str:
        parts = [_safe(self.name)] + ([_safe(self.label)] if self.label else []) + [self.digest]
        return "-".join(parts)

    def folder(self, cache_dir: Path | str) -> Path:
        """``<cache_dir>/<kind>/<name>-<label>-<digest>``."""
        return Path(cache_dir) / self.kind / self.folder_name


# --- sources: the files a cache is built from -----------------------------------------------------


@dataclass(frozen=True)
class Sources:
    """The files a cache is built from: ``files[i]`` is ``root / entries[i]``."""

    root: Path
    entries: Sequence[str]
    files: Sequence[Path]

    @classmethod
    def folder(cls, root: Path | str) -> "Sources":
        """Every file under ``root`` (recursively, sorted by relative path)."""
        root = Path(root)
        files = sorted((p for p in root.rglob("*") if p.is_file()), key=lambda p: p.relative_to(root).as_posix())
        return cls(root, [p.relative_to(root).as_posix() for p in files], files)

    def stat(self, hash_contents: bool | None = None) -> np.ndarray:
        """``[N]`` records ``(size, mtime_ns, digest)``; a missing file has size -1. Contents
        are hashed when ``hash_contents`` (default: when the files total at most
        :data:`CONTENT_HASH_LIMIT` bytes); otherwise ``digest`` is empty."""
        sizes, times = [], []
        for f in self.files:
            try:
                st = os.stat(f)
                sizes.append(st.st_size)
                times.append(st.st_mtime_ns)
            except OSError:
                sizes.append(-1)
                times.append(-1)
        table = np.zeros(len(self.files), dtype=_SOURCE_DTYPE)
        table["size"], table["mtime_ns"] = sizes, times
        if hash_contents is None:
            hash_contents = int(table["size"][table["size"] > 0].sum()) <= CONTENT_HASH_LIMIT
        if hash_contents:
            for i, f in enumerate(self.files):
                if table[i]["size"] >= 0:
                    try:
                        table[i]["digest"] = _file_digest(f)
                    except OSError:
                        table[i]["size"] = -1
        return table

    def missing(self, table: np.ndarray) -> list[Path]:
        return [self.files[i] for i in np.flatnonzero(table["size"] < 0)]

    def changes(self, stored: np.ndarray, current: np.ndarray, limit: int = 3) -> str | None:
        """Why ``current`` differs from ``stored`` (up to ``limit`` files named), or None."""
        if stored.shape != current.shape:
            return f"{len(stored)} source files recorded, {len(current)} now"
        hashed = bool(stored["digest"].any()) and bool(current["digest"].any())
        bad = (stored["size"] != current["size"]) | (stored["mtime_ns"] != current["mtime_ns"])
        if hashed:
            bad |= stored["digest"] != current["digest"]
        idx = np.flatnonzero(bad)
        if not len(idx):
            return None
        why = []
        for i in idx[:limit]:
            s, c = stored[i], current[i]
            if c["size"] < 0:
                what = "missing"
            elif s["size"] != c["size"]:
                what = f"size {s['size']} -> {c['size']} bytes"
            elif hashed and s["digest"] != c["digest"]:
                what = "content changed"
            else:
                what = "modified (time changed)"
            why.append(f"{self.root / self.entries[i]}: {what}")
        more = f" and {len(idx) - limit} more" if len(idx) > limit else ""
        return f"{len(idx)} source file(s) changed since the cache was built: " + "; ".join(why) + more


def _file_digest(path: Path) -> bytes:
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.digest()


# --- records ----------------------------------------------------------------------------------------


def read_record(folder: Path, key: CacheKey) -> dict[str, Any]:
    """``meta.json`` of ``folder``; raises :class:`StaleCache` unless it is a complete record
    of ``key`` (this format, kind, name and key fields)."""
    try:
        with open(folder / META_FILE, encoding="utf-8") as f:
            meta = json.load(f)
    except (OSError, ValueError) as exc:
        raise StaleCache(f"{META_FILE} unreadable ({type(exc).__name__}: {exc})") from exc
    if not isinstance(meta, dict):
        raise StaleCache(f"{META_FILE}: not a JSON object")
    want = {"format": FORMAT, "kind": key.kind, "name": key.name, "key": json.loads(json.dumps(dict(key.fields)))}
    for k, v in want.items():
        if meta.get(k) != v:
            raise StaleCache(f"{META_FILE}: {k} is {meta.get(k)!r}, expected {v!r}")
    return meta


def open_checked(
    folder: Path,
    key: CacheKey,
    open_folder: Callable[[Path, Mapping[str, Any]], T],
    sources: Sources | None = None,
    current: np.ndarray | None = None,
) -> T:
    """``open_folder(folder, record)`` of an up-to-date cache; raises :class:`StaleCache`
    (or the error reading it met) saying why it is not: its record is not one of ``key``, or
    the ``sources`` now (``current``, default: stat them) differ from those it was built from."""
    record = read_record(folder, key)
    if sources is not None:
        stored = np.load(folder / SOURCES_FILE, allow_pickle=False)
        if stored.dtype != _SOURCE_DTYPE:
            raise StaleCache(f"{SOURCES_FILE}: unexpected dtype {stored.dtype}")
        why = sources.changes(stored, sources.stat() if current is None else current)
        if why:
            raise StaleCache(why)
    return open_folder(folder, record)


def open_or_build(
    key: CacheKey,
    cache_dir: Path | str,
    *,
    build: Callable[[Path], int],
    open_folder: Callable[[Path, Mapping[str, Any]], T],
    built_from: str,
    sources: Sources | None = None,
    on_missing: Callable[[Path], Exception] | None = None,
    what: str = "",
) -> tuple[T, bool]:
    """The cache ``key`` under ``cache_dir``: opened when its record matches and its sources
    are unchanged, else (re)built. Returns ``(open_folder(folder, record), built)``.

    * ``build(tmp)`` writes the payload into the temporary folder and returns the number of
      entries; ``open_folder`` reads a folder (raise ``ValueError``/``OSError`` when invalid);
    * ``sources``: the files it is built from (see the module's stale rule);
      ``on_missing(path)``: the exception to raise when a source file is missing (default:
      the cache is rebuilt, and ``build`` meets the missing file itself);
    * ``built_from``: what ``cirbench data cache list`` shows (a root, parameters, an encoder).

    A stale folder is logged as a warning saying why, and rebuilt atomically.
    """
    folder = key.folder(cache_dir)
    what = what or f"{key.kind} cache of {key.name}"
    current = sources.stat() if sources is not None else None
    if sources is not None and on_missing is not None:
        gone = sources.missing(current)
        if gone:
            raise on_missing(gone[0])

    def check(path: Path) -> T:
        return open_checked(path, key, open_folder, sources, current)

    if folder.exists():
        try:
            out = check(folder)
            log.info("%s: using %s", what, folder)
            return out, False
        except _READ_ERRORS as exc:
            log.warning("%s: cache %s is stale (%s: %s); rebuilding", what, folder, type(exc).__name__, exc)

    def fill(tmp: Path) -> None:
        t0 = time.perf_counter()
        n = build(tmp)
        if current is not None:
            np.save(tmp / SOURCES_FILE, current, allow_pickle=False)
        record = {"format": FORMAT, "kind": key.kind, "name": key.name, "key": dict(key.fields),
                  "label": key.label, "built_from": built_from, "entries": int(n),
                  "sources": None if sources is None else len(sources.files),
                  "sources_hashed": bool(current is not None and current["digest"].any()),
                  "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                  "build_seconds": round(time.perf_counter() - t0, 3)}
        with open(tmp / META_FILE, "w", encoding="utf-8") as f:
            json.dump(record, f, indent=1)

    def keep_existing(path: Path) -> bool:  # another process finished the same cache first
        try:
            check(path)
            return True
        except _READ_ERRORS:
            return False

    atomic_write_folder(folder, fill, keep_existing)
    log.info("%s: built %s", what, folder)
    return open_folder(folder, read_record(folder, key)), True


# --- kind "images": decoded images of a local dataset -------------------------------------------------

ARROW_FILE = "images.arrow"
_CHUNK = 256


class ArrowImageCache:
    """Decoded images of one dataset under one transform, built on first use.

    The first :meth:`images` call decodes every image once (a progress bar, a few threads)
    into one Arrow file (Hugging Face ``datasets``' ``ArrowWriter``) and memory-maps it
    (``Dataset.from_file``), so a second epoch, seed or composer reads raw pixels. Key and
    stale rule: see the module docstring (the root's real path and the entries are in the
    key; each file's size, time and, for small datasets, content are checked on opening).

    Args:
        cache_dir: the cirbench cache directory (the cache goes in ``cache_dir/images/...``).
        dataset, version: the dataset's name and loader version.
        transform: how images become ``S x S``.
        entries: relative paths (row i = image id i).
        files: the absolute file of each entry (already checked to lie under the root).
        root: the data root the entries are relative to (default: the common parent of
            ``files``, which is less precise; loaders pass their root).
        workers: decoding threads (default: up to 4, bounded by the CPU count).
    """

    def __init__(
        self,
        cache_dir: Path | str,
        dataset: str,
        version: str | int,
        transform: ImageTransform,
        entries: Sequence[str],
        files: Sequence[Path],
        root: Path | str | None = None,
        workers: int | None = None,
    ) -> None:
        if len(entries) != len(files):
            raise ValueError("ArrowImageCache: entries and files differ in length")
        if root is None:
            root = os.path.commonpath([str(Path(f).parent) for f in files]) if files else "."
        self.dataset = dataset
        self.transform = transform
        self.cache_dir = Path(cache_dir)
        self.sources = Sources(Path(root), list(entries), [Path(f) for f in files])
        realroot = os.path.realpath(root)
        self.key = CacheKey("images", dataset, {
            "version": str(version), "transform": transform.key, "root": realroot,
            "entries": len(entries), "entries_sha256": _digest_lines(entries),
        }, label=f"v{version}-{transform.key}")
        self.folder = self.key.folder(cache_dir)
        self.workers = workers or max(1, min(4, os.cpu_count() or 1))
        self._table = None  # the memory-mapped datasets.Dataset, once built or opened
        #: whether the last prepare() built the cache (False: opened an existing one)
        self.built = False

    @property
    def num_images(self) -> int:
        return len(self.sources.files)

    def ready(self) -> bool:
        """Whether a valid, up-to-date cache exists on disk (does not build it)."""
        try:
            open_checked(self.folder, self.key, self._open, self.sources)
            return True
        except _READ_ERRORS:
            return False

    def prepare(self) -> None:
        """Open the cache, building it first if it is missing or stale. Raises
        :class:`CorruptImageError` naming the file when an image is missing or undecodable."""
        if self._table is not None:
            return
        self._table, self.built = open_or_build(
            self.key, self.cache_dir, build=self._build, open_folder=self._open,
            built_from=str(self.key.fields["root"]), sources=self.sources,
            on_missing=lambda p: CorruptImageError(p, "file not found (it is in the dataset's annotations)"),
            what=f"image cache of {self.dataset}")

    def images(self, ids: Sequence[int]) -> np.ndarray:
        """``uint8 [len(ids), S, S, 3]`` for image ids ``ids`` (builds the cache on first use)."""
        self.prepare()
        s = self.transform.size
        idx = [int(i) for i in ids]
        if not idx:
            return np.zeros((0, s, s, 3), dtype=np.uint8)
        rows = self._table.with_format("arrow")[idx]
        blob = b"".join(rows.column("pixels").to_pylist())
        return np.frombuffer(blob, dtype=np.uint8).reshape(len(idx), s, s, 3)

    def _open(self, folder: Path, record: Mapping[str, Any]):
        import datasets

        table = datasets.Dataset.from_file(str(folder / ARROW_FILE))
        if table.num_rows != self.num_images:
            raise StaleCache(f"{ARROW_FILE}: {table.num_rows} rows, expected {self.num_images}")
        return table

    def _decode(self, path: Path) -> bytes:
        return decode_image(path, self.transform).tobytes()

    def _build(self, tmp: Path) -> int:
        import datasets
        from datasets.arrow_writer import ArrowWriter

        features = datasets.Features({"pixels": datasets.Value("binary")})
        writer = ArrowWriter(features=features, path=str(tmp / ARROW_FILE))
        bar = progress_bar(None, total=self.num_images, desc=f"decoding {self.dataset} images", unit="img")
        files = self.sources.files
        with ThreadPoolExecutor(self.workers) as pool:
            for start in range(0, self.num_images, _CHUNK):
                chunk = files[start:start + _CHUNK]
                writer.write_batch({"pixels": list(pool.map(self._decode, chunk))})
                bar.update(len(chunk))
        bar.close()
        writer.finalize()
        writer.close()
        return self.num_images


# --- kind "generated": generated datasets ---------------------------------------------------------

IMAGES_FILE = "images.npy"
DATA_FILE = "data.json"
Generated = tuple[np.ndarray, dict[str, Any]]
#: Extra validation of a read generated dataset: raise ``ValueError`` saying what is wrong.
Check = Callable[[np.ndarray, Mapping[str, Any]], None]


def generated_key(name: str, params: Mapping[str, Any], label: str = "") -> CacheKey:
    """The key of generated dataset ``name`` with generator parameters ``params``."""
    return CacheKey("generated", name, dict(params), label)


def load_or_generate(
    cache_dir: Path | str | None,
    name: str,
    params: Mapping[str, Any],
    generate: Callable[[], Generated],
    image_shape: Sequence[int],
    check: Optional[Check] = None,
    label: str = "",
) -> Generated:
    """``(images, data)`` of generated dataset ``name``: from its cache when valid, else
    ``generate()`` (written to the cache). ``cache_dir=None``: generate in memory only.

    ``params`` (the generator's parameters) is the key; the generated ``data`` must repeat
    them, ``images`` must be ``uint8 [data["num_images"], *image_shape]`` and ``check(images,
    data)`` must pass (raising ``ValueError`` saying what is wrong; the message is given the
    data file's name), else the cache is stale (logged, regenerated)."""
    if cache_dir is None:
        return generate()
    key = generated_key(name, params, label)
    shape_tail = tuple(int(s) for s in image_shape)

    def validate(images: np.ndarray, data: Mapping[str, Any]) -> None:
        if not isinstance(data, dict):
            raise StaleCache(f"{DATA_FILE}: expected a JSON object")
        for k, want in params.items():
            if data.get(k) != want:
                raise StaleCache(f"{DATA_FILE}: {k} is {data.get(k)!r}, expected {want!r}")
        shape = (data.get("num_images"), *shape_tail)
        if images.dtype != np.uint8 or images.shape != shape:
            raise StaleCache(f"{IMAGES_FILE}: {images.dtype} {images.shape}, expected uint8 {shape}")
        if check is not None:
            try:
                check(images, data)
            except (ValueError, KeyError, TypeError) as exc:  # the check reads the data file
                raise StaleCache(f"{DATA_FILE}: {exc}") from exc

    def build(tmp: Path) -> int:
        images, data = generate()
        validate(images, data)
        np.save(tmp / IMAGES_FILE, images, allow_pickle=False)
        with open(tmp / DATA_FILE, "w", encoding="utf-8") as f:
            json.dump(data, f, separators=(",", ":"))
        return len(images)

    def open_folder(folder: Path, record: Mapping[str, Any]) -> Generated:
        with open(folder / DATA_FILE, encoding="utf-8") as f:
            data = json.load(f)
        images = np.load(folder / IMAGES_FILE, allow_pickle=False)
        validate(images, data)
        return images, data

    built_from = ", ".join(f"{k}={v}" for k, v in params.items())
    out, _ = open_or_build(key, cache_dir, build=build, open_folder=open_folder, built_from=built_from,
                           what=f"generated dataset {name}")
    return out


# --- kind "text-embeddings": frozen text embeddings ---------------------------------------------------

EMBEDDINGS_FILE = "embeddings.pt"


def texts_digest(texts: Sequence[str]) -> str:
    """SHA-256 of the sorted unique ``texts`` (order and duplicates do not matter)."""
    return _digest_lines(sorted(set(str(t) for t in texts)))


def load_or_compute_embeddings(
    cache_dir: Path | str | None,
    name: str,
    encoder: str,
    model_dir: Path | str,
    texts: Sequence[str],
    compute: Callable[[list[str]], "Any"],
    out_dim: int,
) -> tuple["Any", str]:
    """``(embeddings [N, out_dim] float32 CPU tensor, source)`` of the sorted unique
    ``texts`` (row i = i-th text), from the cache or ``compute(texts)``; ``source`` is
    ``"disk"`` or ``"encoder"``. ``cache_dir=None``: computed, not cached.

    Key: ``name`` (the dataset), ``encoder`` (its settings: identity, layer, pooling, length),
    the real path of ``model_dir`` and the texts. Stale rule: every file of ``model_dir``
    (weights, tokenizer, config) is a source, so weights replaced in place are noticed."""
    import torch

    unique = sorted(set(str(t) for t in texts))
    if cache_dir is None:
        return compute(unique), "encoder"
    key = embeddings_key(name, encoder, model_dir, unique)

    def build(tmp: Path) -> int:
        emb = compute(unique).detach().float().cpu().contiguous()
        buf = io.BytesIO()
        torch.save({"texts": unique, "embeddings": emb}, buf)
        (tmp / EMBEDDINGS_FILE).write_bytes(buf.getvalue())
        return len(unique)

    def open_folder(folder: Path, record: Mapping[str, Any]):
        state = torch.load(io.BytesIO((folder / EMBEDDINGS_FILE).read_bytes()), map_location="cpu",
                           weights_only=True)
        emb = state["embeddings"]
        if state.get("texts") != unique or tuple(emb.shape) != (len(unique), out_dim):
            raise StaleCache(f"{EMBEDDINGS_FILE}: other texts or shape {tuple(emb.shape)}")
        return emb.float()

    (emb, built) = open_or_build(key, cache_dir, build=build, open_folder=open_folder,
                                 built_from=f"encoder {encoder} at {os.path.realpath(model_dir)}",
                                 sources=Sources.folder(model_dir), what=f"text embeddings of {name}")
    return emb, ("encoder" if built else "disk")


def embeddings_key(name: str, encoder: str, model_dir: Path | str, texts: Sequence[str]) -> CacheKey:
    """The key of the text embeddings of ``texts`` by ``encoder`` (see
    :func:`load_or_compute_embeddings`)."""
    return CacheKey("text-embeddings", name, {
        "encoder": encoder, "model_dir": os.path.realpath(model_dir),
        "texts": len(set(texts)), "texts_sha256": texts_digest(texts)},
        label=encoder.split(":", 1)[0])


def sources_fingerprint(root: Path | str) -> str:
    """A short digest of the files under ``root`` as :class:`Sources` records them (size,
    time, and content when small): equal while none of them changes."""
    table = Sources.folder(root).stat()
    return hashlib.sha256(table.tobytes()).hexdigest()[:16]


# --- listing and clearing ---------------------------------------------------------------------------


@dataclass(frozen=True)
class CacheEntry:
    """One cache folder, as ``cirbench data cache list`` shows it."""

    folder: Path
    kind: str
    name: str
    built_from: str
    entries: int | None
    bytes: int
    created: str
    status: str  # "ok", "interrupted build", "old format", "unreadable record"
    label: str = ""
    key: Mapping[str, Any] = field(default_factory=dict)

    @property
    def megabytes(self) -> float:
        return self.bytes / 2**20

    @property
    def complete(self) -> bool:
        return self.status == "ok"


def _folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) if folder.is_dir() \
        else folder.stat().st_size


def _entry(folder: Path, kind: str) -> CacheEntry:
    meta: dict[str, Any] = {}
    try:
        with open(folder / META_FILE, encoding="utf-8") as f:
            meta = json.load(f)
        if not isinstance(meta, dict):
            meta = {}
    except (OSError, ValueError):
        pass
    if folder.name.startswith("."):
        status = "interrupted build"
    elif not meta:
        status = "unreadable record"
    elif meta.get("format") != FORMAT:
        status = "old format"
    else:
        status = "ok"
    name = meta.get("name") or meta.get("dataset") or folder.name.lstrip(".").split("-v")[0].split(".tmp-")[0]
    entries = meta.get("entries", meta.get("num_images"))
    return CacheEntry(folder, kind, str(name), str(meta.get("built_from", "?")),
                      entries if isinstance(entries, int) else None, _folder_bytes(folder),
                      str(meta.get("created", "?")), status, str(meta.get("label") or meta.get("transform") or ""),
                      meta.get("key") or {})


def cache_entries(cache_dir: Path | str, kind: str | None = None) -> list[CacheEntry]:
    """Every cache folder under ``cache_dir`` (of ``kind`` when given), sorted by kind and
    folder; leftovers of interrupted builds and folders of an old format are included (see
    :attr:`CacheEntry.status`). Generated datasets of the old layout (a folder with
    ``images.npy`` and ``meta.json`` directly in ``cache_dir``) are listed as ``generated``,
    ``old format``."""
    if kind is not None and kind not in KINDS:
        raise ValueError(f"cache kind must be one of {sorted(KINDS)}, got {kind!r}")
    root = Path(cache_dir)
    if not root.is_dir():
        return []
    out = []
    for k in KINDS:
        if kind not in (None, k) or not (root / k).is_dir():
            continue
        out += [_entry(p, k) for p in sorted((root / k).iterdir()) if p.is_dir()]
    if kind in (None, "generated"):  # format 1 kept generated datasets at the top level
        for p in sorted(root.iterdir()):
            if p.is_dir() and p.name not in KINDS and (p / IMAGES_FILE).is_file() and (p / META_FILE).is_file():
                e = _entry(p, "generated")
                out.append(CacheEntry(e.folder, e.kind, e.name, "?", e.entries, e.bytes, e.created, "old format"))
    return out


def clear_cache(cache_dir: Path | str, name: str | None = None, kind: str | None = None) -> list[CacheEntry]:
    """Remove the caches of dataset ``name`` (all when None) of ``kind`` (all kinds when None),
    including leftovers of interrupted builds; returns what was removed."""
    removed = []
    for entry in cache_entries(cache_dir, kind):
        if name is None or entry.name == name:
            remove_path(entry.folder)
            removed.append(entry)
    return removed


__all__ = [
    "ARROW_FILE", "ArrowImageCache", "CONTENT_HASH_LIMIT", "CacheEntry", "CacheKey", "FORMAT", "KINDS",
    "META_FILE", "Sources", "StaleCache", "cache_entries", "clear_cache", "embeddings_key", "generated_key",
    "load_or_compute_embeddings", "load_or_generate", "open_checked", "open_or_build", "read_record",
    "sources_fingerprint",
    "texts_digest",
]
