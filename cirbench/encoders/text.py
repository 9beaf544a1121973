"""Trainable text encoders: TIRG's tokeniser, vocabulary and LSTM text model.

* :func:`tokenize`: drop non-ASCII, lowercase, strip punctuation, split on whitespace;
* :class:`Vocabulary`: token ids in sorted token order, 0 = ``<UNK>`` and padding;
* :class:`LSTMTextEncoder`: Embedding -> LSTM -> output at the last real token ->
  Dropout(0.1) -> Linear, ``texts -> [B, out_dim]``.

All of docs/papers.md §2. Frozen pretrained sentence encoders are in
:mod:`cirbench.encoders.sentence`.
"""

from __future__ import annotations

import string
from typing import Sequence

import torch
from torch import nn

_PUNCT = str.maketrans("", "", string.punctuation)


def tokenize(text: str) -> list[str]:
    """TIRG's tokeniser: drop non-ASCII, lowercase, strip punctuation, split on whitespace.

    See docs/papers.md §2."""
    ascii_only = text.encode("ascii", "ignore").decode()
    return ascii_only.lower().translate(_PUNCT).split()


class Vocabulary:
    """Token ids in sorted token order; id 0 is ``<UNK>`` (unknown words and padding).

    See docs/papers.md §2."""

    def __init__(self, texts: Sequence[str]) -> None:
        tokens = sorted({tok for t in texts for tok in tokenize(t)})
        self.itos = ["<UNK>"] + tokens
        self.stoi = {tok: i for i, tok in enumerate(self.itos)}

    def __len__(self) -> int:
        return len(self.itos)

    def encode(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """``(ids [B, L] int64 padded with 0, lengths [B] int64)``; an empty text becomes one
        ``<UNK>`` token so every sequence has a last real token."""
        seqs = [[self.stoi.get(tok, 0) for tok in tokenize(t)] or [0] for t in texts]
        lengths = torch.tensor([len(s) for s in seqs], dtype=torch.long)
        ids = torch.zeros(len(seqs), int(lengths.max()) if seqs else 1, dtype=torch.long)
        for i, s in enumerate(seqs):
            ids[i, : len(s)] = torch.tensor(s, dtype=torch.long)
        return ids, lengths


class LSTMTextEncoder(nn.Module):
    """TIRG's text model: Embedding(V, word_dim) -> LSTM(word_dim, hidden) -> output at the last
    real token -> Dropout -> Linear(hidden, out_dim).

    See docs/papers.md §2."""

    def __init__(
        self,
        texts: Sequence[str],
        out_dim: int,
        word_dim: int = 512,
        hidden_dim: int = 512,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.vocab = Vocabulary(texts)
        self.embedding = nn.Embedding(len(self.vocab), word_dim)
        self.lstm = nn.LSTM(word_dim, hidden_dim, batch_first=True)
        self.fc = nn.Sequential(nn.Dropout(dropout), nn.Linear(hidden_dim, out_dim))
        self.out_dim = out_dim

    def forward(self, texts: Sequence[str]) -> torch.Tensor:
        device = self.embedding.weight.device
        ids, lengths = self.vocab.encode(texts)
        ids, lengths = ids.to(device), lengths.to(device)
        hidden, _ = self.lstm(self.embedding(ids))  # zero initial state
        last = hidden[torch.arange(len(texts), device=device), lengths - 1]
        return self.fc(last)
