"""Shared encoders: the protocol's image backbone and the vocabulary LSTM text encoder.

* :class:`ImageBackbone`: a torchvision ResNet without its classifier. ``forward`` gives the
  globally average-pooled last feature map; :meth:`ImageBackbone.feature_maps` gives the maps
  of any stages (``layer1`` .. ``layer4``) for composers that work on several levels.
* :class:`ImageEncoder`: backbone + ``Linear(out_dim, embed_dim)``, TIRG's image model
  (REFERENCE.md §2: avgpool -> fc replaced by a linear layer to the embedding size).
* :class:`Vocabulary` and :class:`LSTMTextEncoder`: TIRG's text model (REFERENCE.md §2:
  tokenise = drop non-ASCII, lowercase, strip punctuation, split; ids in sorted token order,
  0 = ``<UNK>`` and padding; Embedding -> LSTM -> output at the last real token ->
  Dropout(0.1) -> Linear).

Pretrained weights are never downloaded: with ``protocol.pretrained`` the ImageNet weights
must already lie in torch's hub cache, else :class:`MissingWeightsError` says where.
"""

from __future__ import annotations

import os
import string
from typing import TYPE_CHECKING, Sequence

import torch
import torchvision
from torch import nn

if TYPE_CHECKING:
    from cirbench.protocol import Protocol

_STAGES = ("layer1", "layer2", "layer3", "layer4")


class MissingWeightsError(FileNotFoundError):
    """Pretrained weights asked for by the protocol are not on this machine."""


def _pretrained_state_dict(arch: str) -> tuple[dict, str]:
    weights = torchvision.models.get_model_weights(arch).DEFAULT
    filename = os.path.basename(weights.url)
    path = os.path.join(torch.hub.get_dir(), "checkpoints", filename)
    if not os.path.exists(path):
        raise MissingWeightsError(
            f"the protocol asks for ImageNet weights of {arch} ({weights}), expected at {path}; "
            "cirbench never downloads at run time: place the file there or use a protocol "
            "with pretrained=False"
        )
    return torch.load(path, map_location="cpu", weights_only=True), str(weights)


class ImageBackbone(nn.Module):
    """A torchvision ResNet trunk (no pooling, no classifier) named by the protocol."""

    def __init__(self, arch: str = "resnet18", pretrained: bool = False) -> None:
        super().__init__()
        try:
            net = torchvision.models.get_model(arch, weights=None)
        except ValueError as exc:
            raise ValueError(f"unknown backbone {arch!r} (a torchvision ResNet name)") from exc
        if not hasattr(net, "layer4"):
            raise ValueError(f"backbone {arch!r} is not a ResNet (no layer4)")
        self.weights_name = ""
        if pretrained:
            state, self.weights_name = _pretrained_state_dict(arch)
            net.load_state_dict(state)
        self.stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool)
        self.layer1, self.layer2, self.layer3, self.layer4 = (
            net.layer1, net.layer2, net.layer3, net.layer4
        )
        self.arch = arch
        self.out_dim: int = net.fc.in_features
        self.stage_dims: dict[str, int] = {
            name: _stage_channels(getattr(self, name)) for name in _STAGES
        }

    def feature_maps(self, x: torch.Tensor, stages: Sequence[str] = ("layer4",)) -> dict[str, torch.Tensor]:
        """Feature maps ``[B, C, h, w]`` of the named stages (stops after the last asked)."""
        unknown = set(stages) - set(_STAGES)
        if unknown:
            raise ValueError(f"unknown backbone stages {sorted(unknown)}; valid: {_STAGES}")
        out: dict[str, torch.Tensor] = {}
        last = max(_STAGES.index(s) for s in stages)
        x = self.stem(x)
        for name in _STAGES[: last + 1]:
            x = getattr(self, name)(x)
            if name in stages:
                out[name] = x
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Globally average-pooled ``layer4`` features ``[B, out_dim]``."""
        return self.feature_maps(x)["layer4"].mean(dim=(2, 3))


def _stage_channels(stage: nn.Module) -> int:
    block = stage[-1]
    last_bn = block.bn3 if hasattr(block, "bn3") else block.bn2
    return last_bn.num_features


def build_image_backbone(protocol: "Protocol") -> ImageBackbone:
    """The image backbone a protocol fixes for every composer."""
    return ImageBackbone(protocol.backbone, protocol.pretrained)


class ImageEncoder(nn.Module):
    """Backbone -> global average pool -> ``Linear(out_dim, embed_dim)`` (TIRG's image model)."""

    def __init__(self, protocol: "Protocol") -> None:
        super().__init__()
        self.backbone = build_image_backbone(protocol)
        self.fc = nn.Linear(self.backbone.out_dim, protocol.embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.backbone(x))


_PUNCT = str.maketrans("", "", string.punctuation)


def tokenize(text: str) -> list[str]:
    """TIRG's tokeniser: drop non-ASCII, lowercase, strip punctuation, split on whitespace."""
    ascii_only = text.encode("ascii", "ignore").decode()
    return ascii_only.lower().translate(_PUNCT).split()


class Vocabulary:
    """Token ids in sorted token order; id 0 is ``<UNK>`` (unknown words and padding)."""

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
    real token -> Dropout -> Linear(hidden, out_dim)."""

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
