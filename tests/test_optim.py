"""Optimiser recipes (``cirbench.optim``): the protocol's default optimiser (what
``Composer.configure_optimizers`` gives a composer without a recipe) and TIRG's parameter
groups (docs/papers.md §2)."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from cirbench import Composer, ComposerContext
from cirbench.encoders.image import ImageEncoder
from cirbench.optim import image_encoder_param_groups, protocol_optimizer
from cirbench.protocol import BUILTIN_PROTOCOLS

SMOKE = next(p for p in BUILTIN_PROTOCOLS if p.name == "smoke")


class _Plain(Composer):
    """A composer that keeps the default ``configure_optimizers``; one frozen layer."""

    def __init__(self, ctx):
        super().__init__(ctx)
        self.image = ImageEncoder(ctx.protocol)
        self.mix = nn.Linear(ctx.protocol.embed_dim, ctx.protocol.embed_dim)
        self.frozen = nn.Linear(3, 3).requires_grad_(False)

    def compose(self, images, texts):
        return self.mix(self.image(images))

    def embed_target(self, images):
        return self.image(images)

    def training_loss(self, batch):
        return {"base": self.compose(batch.reference_images, batch.texts).sum()}


def _ids(params) -> list[int]:
    return sorted(id(p) for p in params)


def _plain(protocol=SMOKE) -> _Plain:
    return _Plain(ComposerContext(protocol=protocol, train_texts=["a"]))


def test_default_optimizer_of_the_builtin_presets_is_sgd_001_momentum_09():
    for p in BUILTIN_PROTOCOLS:
        assert (p.optimizer, p.lr, p.momentum) == ("sgd", 0.01, 0.9), p.name
    model = _plain(dataclasses.replace(SMOKE, weight_decay=5e-5))
    (opt,) = model.configure_optimizers()
    assert type(opt) is torch.optim.SGD and len(opt.param_groups) == 1
    g = opt.param_groups[0]
    assert (g["lr"], g["momentum"], g["weight_decay"]) == (0.01, 0.9, 5e-5)
    assert _ids(g["params"]) == _ids(p for p in model.parameters() if p.requires_grad)
    assert not any(p is model.frozen.weight for p in g["params"])


@pytest.mark.parametrize("name,cls", [("adam", torch.optim.Adam), ("adamw", torch.optim.AdamW)])
def test_the_protocols_optimizer_fields_are_what_the_default_builds(name, cls):
    protocol = dataclasses.replace(SMOKE, optimizer=name, lr=3e-4, momentum=0.8, weight_decay=1e-4)
    (opt,) = _plain(protocol).configure_optimizers()
    assert type(opt) is cls
    g = opt.param_groups[0]
    assert (g["lr"], g["betas"], g["weight_decay"]) == (3e-4, (0.8, 0.999), 1e-4)
    sgd = protocol_optimizer([nn.Parameter(torch.zeros(2))], dataclasses.replace(SMOKE, lr=0.5, momentum=0.0))
    assert type(sgd) is torch.optim.SGD and (sgd.param_groups[0]["lr"], sgd.param_groups[0]["momentum"]) == (0.5, 0.0)


def test_one_default_sgd_step_by_hand():
    # p = 1, loss = 2 p (grad 2), wd 0.5: the first step's buffer is grad + wd * p = 2.5,
    # p <- 1 - lr * 2.5 = 1 - 0.1 * 2.5 = 0.75
    p = nn.Parameter(torch.tensor([1.0]))
    opt = protocol_optimizer([p], dataclasses.replace(SMOKE, lr=0.1, weight_decay=0.5))
    (2 * p).sum().backward()
    opt.step()
    assert p.item() == pytest.approx(0.75)


def test_protocol_optimizer_refuses_an_empty_parameter_list():
    with pytest.raises(ValueError, match="smoke.*no parameters"):
        protocol_optimizer([], SMOKE)


# --- TIRG's parameter groups ------------------------------------------------------------------


def test_tirgs_groups_with_pretrained_weights_split_fc_trunk_and_rest():
    model = _plain()
    groups = image_encoder_param_groups(model, model.image, lr=0.02, pretrained=True, backbone_lr_mult=0.1)
    by_name = {g["name"]: g for g in groups}
    assert [g["name"] for g in groups] == ["image_fc", "backbone", "rest"]
    assert by_name["image_fc"]["lr"] == 0.02 and by_name["rest"]["lr"] == 0.02
    assert by_name["backbone"]["lr"] == pytest.approx(0.002)  # 0.1 x 0.02
    assert _ids(by_name["image_fc"]["params"]) == _ids(model.image.fc.parameters())
    assert _ids(by_name["backbone"]["params"]) == _ids(model.image.backbone.parameters())
    assert _ids(by_name["rest"]["params"]) == _ids(model.mix.parameters())  # the frozen layer is not listed
    every = [id(p) for g in groups for p in g["params"]]
    assert len(every) == len(set(every))  # each parameter in exactly one group


@pytest.mark.parametrize("pretrained,mult", [(False, 0.1), (True, 1.0)])
def test_tirgs_groups_are_one_group_without_pretrained_weights_or_with_mult_one(pretrained, mult):
    model = _plain()
    (group,) = image_encoder_param_groups(model, model.image, lr=0.01, pretrained=pretrained, backbone_lr_mult=mult)
    assert group["name"] == "all" and group["lr"] == 0.01
    assert _ids(group["params"]) == _ids(p for p in model.parameters() if p.requires_grad)


def test_tirgs_groups_leave_out_empty_groups():
    model = _plain()
    model.mix.requires_grad_(False)
    groups = image_encoder_param_groups(model, model.image, lr=0.01, pretrained=True)
    assert [g["name"] for g in groups] == ["image_fc", "backbone"]


def test_old_import_path_still_works_for_plugins():
    import cirbench.encoders as enc

    assert enc.image_encoder_param_groups is image_encoder_param_groups
    assert enc.ImageEncoder is ImageEncoder
