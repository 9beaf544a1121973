"""The image backbone every composer shares: the protocol's torchvision ResNet trunk.

* :class:`ImageBackbone`: a torchvision ResNet without its classifier. ``forward`` gives the
  globally average-pooled last feature map ``[B, out_dim]``; :meth:`ImageBackbone.feature_maps`
  gives the maps ``[B, C, h, w]`` of any stages (``layer1`` .. ``layer4``) for composers that
  work on several levels.
* :func:`build_image_backbone`: the backbone a protocol fixes (``protocol.backbone``,
  ``protocol.pretrained``).
* :class:`ImageEncoder`: backbone + ``Linear(out_dim, embed_dim)``, TIRG's image model
  (docs/papers.md §2: avgpool -> fc replaced by a linear layer to the embedding size).

Pretrained weights are never downloaded: with ``protocol.pretrained`` the ImageNet weights
must already lie in torch's hub cache, else :class:`MissingWeightsError` says where.
"""

from __future__ import annotations

import os
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
