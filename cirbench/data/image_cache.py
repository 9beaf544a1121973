"""The decoded-image cache: images decoded and resized once, kept as an Arrow file.

Real datasets store JPEGs; decoding and resizing them is the slow part of an epoch. The
first time a dataset's images are needed under a transform, :class:`ArrowImageCache` decodes
every image once (a progress bar, a few threads) into one Arrow file written with Hugging
Face ``datasets`` (``ArrowWriter``) and memory-maps it afterwards (``Dataset.from_file``), so
a second epoch, a second seed or a second composer reads raw pixels instead of decoding.

Key and folder: ``<cache_dir>/images/<dataset>-v<version>-<transform>-<fingerprint>/`` where
``version`` is the loader's version (bump it when the loader changes which pixels an id
gets), ``transform`` is :attr:`ImageTransform.key` (mode and size) and ``fingerprint`` hashes
the ordered list of image paths (a changed manifest gets a new cache). The folder holds
``images.arrow`` (one row per image id, column ``pixels``: the ``S*S*3`` RGB bytes) and
``meta.json``.

Atomicity: the cache is written into a temporary sibling folder and renamed into place, so an
interrupted build never leaves a cache that would be read; leftovers of interrupted builds
(``.<name>.tmp-*``) are removed by :func:`clear_cache`. A cache folder that fails validation
is rebuilt.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from cirbench.data.decode import ImageTransform, decode_image
from cirbench.progress import progress_bar

log = logging.getLogger(__name__)

CACHE_SUBDIR = "images"
"""Sub-folder of the cache directory that holds image caches."""
CACHE_FORMAT = 1
"""Bump when the layout of a cache folder changes."""
ARROW_FILE = "images.arrow"
META_FILE = "meta.json"
_CHUNK = 256


def fingerprint(entries: Sequence[str]) -> str:
    """Hash of the ordered list of image entries (relative paths)."""
    h = hashlib.sha256()
    for e in entries:
        h.update(e.encode("utf-8", "surrogateescape"))
        h.update(b"\n")
    return h.hexdigest()[:12]


def images_cache_root(cache_dir: Path | str) -> Path:
    return Path(cache_dir) / CACHE_SUBDIR


@dataclass(frozen=True)
class CacheKey:
    """What a decoded-image cache is keyed by."""

    dataset: str
    version: str
    transform: ImageTransform
    fingerprint: str

    @property
    def folder_name(self) -> str:
        return f"{self.dataset}-v{self.version}-{self.transform.key}-{self.fingerprint}"

    def as_dict(self) -> dict[str, Any]:
        return {"format": CACHE_FORMAT, "dataset": self.dataset, "version": self.version,
                "transform": self.transform.key, "size": self.transform.size,
                "mode": self.transform.mode, "fingerprint": self.fingerprint}


class ArrowImageCache:
    """Decoded images of one dataset under one transform, built on first use.

    Args:
        cache_dir: the cirbench cache directory (the cache goes in ``cache_dir/images/...``).
        dataset, version: the dataset's name and loader version.
        transform: how images become ``S x S``.
        entries: relative paths (row i = image id i), hashed into the key.
        files: the absolute file of each entry (already checked to lie under the root).
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
        workers: int | None = None,
    ) -> None:
        if len(entries) != len(files):
            raise ValueError("ArrowImageCache: entries and files differ in length")
        self.key = CacheKey(dataset, str(version), transform, fingerprint(entries))
        self.folder = images_cache_root(cache_dir) / self.key.folder_name
        self.files = list(files)
        self.workers = workers or max(1, min(4, os.cpu_count() or 1))
        self._table = None  # the memory-mapped datasets.Dataset, once built or opened

    # --- public ---------------------------------------------------------------------------------
    @property
    def num_images(self) -> int:
        return len(self.files)

    def ready(self) -> bool:
        """Whether a valid cache exists on disk (does not build it)."""
        try:
            self._open()
            return True
        except (OSError, ValueError):
            return False

    def prepare(self) -> None:
        """Open the cache, building it first if needed."""
        if self._table is not None:
            return
        if self.folder.exists():
            try:
                self._table = self._open()
                return
            except (OSError, ValueError) as exc:
                log.warning("image cache %s is invalid (%s); rebuilding", self.folder, exc)
                shutil.rmtree(self.folder, ignore_errors=True)
        self._build()
        self._table = self._open()

    def images(self, ids: Sequence[int]) -> np.ndarray:
        """``uint8 [len(ids), S, S, 3]`` for image ids ``ids`` (builds the cache on first use)."""
        self.prepare()
        s = self.key.transform.size
        idx = [int(i) for i in ids]
        if not idx:
            return np.zeros((0, s, s, 3), dtype=np.uint8)
        rows = self._table.with_format("arrow")[idx]
        blob = b"".join(rows.column("pixels").to_pylist())
        return np.frombuffer(blob, dtype=np.uint8).reshape(len(idx), s, s, 3)

    # --- internals ------------------------------------------------------------------------------
    def _open(self):
        import datasets

        with open(self.folder / META_FILE, encoding="utf-8") as f:
            meta = json.load(f)
        want = {**self.key.as_dict(), "num_images": self.num_images}
        for k, v in want.items():
            if meta.get(k) != v:
                raise ValueError(f"{META_FILE}: {k} is {meta.get(k)!r}, expected {v!r}")
        table = datasets.Dataset.from_file(str(self.folder / ARROW_FILE))
        if table.num_rows != self.num_images:
            raise ValueError(f"{ARROW_FILE}: {table.num_rows} rows, expected {self.num_images}")
        return table

    def _decode(self, path: Path) -> bytes:
        return decode_image(path, self.key.transform).tobytes()

    def _build(self) -> None:
        import datasets
        from datasets.arrow_writer import ArrowWriter

        self.folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{self.folder.name}.tmp-", dir=self.folder.parent))
        t0 = time.perf_counter()
        try:
            features = datasets.Features({"pixels": datasets.Value("binary")})
            writer = ArrowWriter(features=features, path=str(tmp / ARROW_FILE))
            bar = progress_bar(None, total=self.num_images, desc=f"decoding {self.key.dataset} images",
                               unit="img")
            with ThreadPoolExecutor(self.workers) as pool:
                for start in range(0, self.num_images, _CHUNK):
                    chunk = self.files[start:start + _CHUNK]
                    writer.write_batch({"pixels": list(pool.map(self._decode, chunk))})
                    bar.update(len(chunk))
            bar.close()
            writer.finalize()
            writer.close()
            meta = {**self.key.as_dict(), "num_images": self.num_images,
                    "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
            with open(tmp / META_FILE, "w", encoding="utf-8") as f:
                json.dump(meta, f, indent=1)
            try:
                os.replace(tmp, self.folder)
            except OSError:
                # Another process finished the same cache first: keep theirs if it is valid.
                try:
                    self._open()
                except (OSError, ValueError):
                    shutil.rmtree(self.folder, ignore_errors=True)
                    os.replace(tmp, self.folder)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        log.info("image cache %s: %d images decoded in %.1f s", self.folder, self.num_images,
                 time.perf_counter() - t0)


# --- listing and clearing ---------------------------------------------------------------------


@dataclass(frozen=True)
class CacheEntry:
    """One cache folder, as ``cirbench data cache list`` shows it."""

    folder: Path
    dataset: str
    version: str
    transform: str
    num_images: int | None
    bytes: int
    complete: bool

    @property
    def megabytes(self) -> float:
        return self.bytes / 2**20


def _folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def cache_entries(cache_dir: Path | str) -> list[CacheEntry]:
    """Every decoded-image cache under ``cache_dir`` (interrupted builds show as incomplete)."""
    root = images_cache_root(cache_dir)
    if not root.is_dir():
        return []
    out = []
    for folder in sorted(root.iterdir()):
        if not folder.is_dir():
            continue
        meta: dict[str, Any] = {}
        try:
            with open(folder / META_FILE, encoding="utf-8") as f:
                meta = json.load(f)
        except (OSError, ValueError):
            pass
        complete = bool(meta) and not folder.name.startswith(".") and (folder / ARROW_FILE).is_file()
        name = meta.get("dataset") or folder.name.lstrip(".").split("-v")[0]
        out.append(CacheEntry(folder, str(name), str(meta.get("version", "?")), str(meta.get("transform", "?")),
                              meta.get("num_images"), _folder_bytes(folder), complete))
    return out


def clear_cache(cache_dir: Path | str, dataset: str | None = None) -> list[CacheEntry]:
    """Remove the decoded-image caches of ``dataset`` (all datasets when None), including
    leftovers of interrupted builds; returns what was removed."""
    removed = []
    for entry in cache_entries(cache_dir):
        if dataset is None or entry.dataset == dataset:
            shutil.rmtree(entry.folder, ignore_errors=True)
            removed.append(entry)
    return removed
