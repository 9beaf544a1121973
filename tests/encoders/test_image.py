"""The image backbone (``cirbench.encoders.image``): the protocol's torchvision ResNet trunk,
its feature maps, truncation, local-only pretrained weights, and TIRG's ImageEncoder
(docs/papers.md §2). The reference for every output is torchvision's own ResNet."""

from __future__ import annotations

import dataclasses
import os

import pytest
import torch
import torchvision
from torch import nn

from cirbench.encoders.image import (
    ImageBackbone,
    ImageEncoder,
    MissingWeightsError,
    build_image_backbone,
)
from cirbench.protocol import BUILTIN_PROTOCOLS

SMOKE = next(p for p in BUILTIN_PROTOCOLS if p.name == "smoke")


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _torchvision_twin(backbone: ImageBackbone) -> nn.Module:
    """torchvision's ResNet of the same architecture holding the backbone's weights, its
    classifier replaced by the identity: its output is the pooled layer4 features."""
    net = torchvision.models.get_model(backbone.arch, weights=None)
    net.fc = nn.Identity()
    state = {k.replace("stem.0.", "conv1.").replace("stem.1.", "bn1."): v for k, v in backbone.state_dict().items()}
    net.load_state_dict(state)
    return net.eval()


def test_resnet18_stage_widths_and_map_sizes():
    torch.manual_seed(0)
    bb = ImageBackbone("resnet18").eval()
    assert bb.out_dim == 512
    assert bb.stage_dims == {"layer1": 64, "layer2": 128, "layer3": 256, "layer4": 512}
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        maps = bb.feature_maps(x, ("layer1", "layer2", "layer3", "layer4"))
    # 64 px: conv1 (stride 2) -> 32, maxpool -> 16 (layer1), then /2 per stage: 8, 4, 2
    assert {k: tuple(v.shape) for k, v in maps.items()} == {
        "layer1": (2, 64, 16, 16), "layer2": (2, 128, 8, 8), "layer3": (2, 256, 4, 4), "layer4": (2, 512, 2, 2),
    }


def test_resnet50_widths_come_from_its_bottleneck_blocks():
    bb = ImageBackbone("resnet50")
    assert bb.out_dim == 2048
    assert bb.stage_dims == {"layer1": 256, "layer2": 512, "layer3": 1024, "layer4": 2048}


def test_forward_is_torchvisions_pooled_features():
    torch.manual_seed(1)
    bb = ImageBackbone("resnet18").eval()
    x = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(bb(x), _torchvision_twin(bb)(x), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(bb.feature_maps(x)["layer4"].mean(dim=(2, 3)), bb(x))


def test_truncate_after_drops_deeper_stages_and_refuses_their_maps():
    bb = ImageBackbone("resnet18")
    before = sum(p.numel() for p in bb.parameters())
    bb.truncate_after("layer2")
    assert isinstance(bb.layer3, nn.Identity) and isinstance(bb.layer4, nn.Identity)
    assert sum(p.numel() for p in bb.parameters()) < before
    assert bb.stage_dims["layer4"] == 512  # widths stay known
    x = torch.randn(1, 3, 32, 32)
    assert bb.feature_maps(x, ("layer2",))["layer2"].shape == (1, 128, 4, 4)
    with pytest.raises(ValueError, match="dropped"):
        bb.feature_maps(x, ("layer3",))
    with pytest.raises(ValueError, match="dropped"):
        bb(x)
    with pytest.raises(ValueError, match="layer9"):
        bb.truncate_after("layer9")


def test_unknown_or_non_resnet_architectures_are_named():
    with pytest.raises(ValueError, match="resnet19"):
        ImageBackbone("resnet19")
    with pytest.raises(ValueError, match="vgg11.*not a ResNet"):
        ImageBackbone("vgg11")
    with pytest.raises(ValueError, match="layer7"):
        ImageBackbone("resnet18").feature_maps(torch.zeros(1, 3, 32, 32), ("layer7",))


def test_pretrained_weights_are_read_from_the_hub_cache_only(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    weights = torchvision.models.get_model_weights("resnet18").DEFAULT
    expected = os.path.join(str(tmp_path), "checkpoints", os.path.basename(weights.url))
    with pytest.raises(MissingWeightsError) as err:
        ImageBackbone("resnet18", pretrained=True)
    assert expected in str(err.value) and "pretrained=False" in str(err.value)
    # a checkpoint placed there is loaded (here: a seeded random ResNet-18 standing in)
    torch.manual_seed(3)
    source = torchvision.models.resnet18(weights=None)
    os.makedirs(os.path.dirname(expected))
    torch.save(source.state_dict(), expected)
    bb = ImageBackbone("resnet18", pretrained=True)
    assert torch.equal(bb.stem[0].weight, source.conv1.weight)
    assert torch.equal(bb.layer4[1].bn2.running_var, source.layer4[1].bn2.running_var)
    assert bb.weights_name == str(weights)
    assert ImageBackbone("resnet18").weights_name == ""


def test_build_image_backbone_follows_the_protocol():
    bb = build_image_backbone(dataclasses.replace(SMOKE, backbone="resnet34"))
    assert bb.arch == "resnet34" and bb.out_dim == 512 and len(bb.layer3) == 6  # ResNet-34: 3-4-6-3 blocks


def test_image_encoder_is_pooled_backbone_then_linear_to_embed_dim():
    torch.manual_seed(4)
    enc = ImageEncoder(dataclasses.replace(SMOKE, embed_dim=24)).eval()
    assert (enc.fc.in_features, enc.fc.out_features) == (512, 24)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        pooled = _torchvision_twin(enc.backbone)(x)
        torch.testing.assert_close(enc(x), pooled @ enc.fc.weight.T + enc.fc.bias, rtol=1e-5, atol=1e-5)
