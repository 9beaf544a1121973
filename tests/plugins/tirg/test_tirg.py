"""Tests of the reference plugin ``tirg`` (docs/papers.md §2; google/tirg
``img_text_composition_models.py``, ``main.py``).

Each equation is checked against a plain tensor expression written here, independent of the
module's code: the gate, the residual, the composition, the LastConv map-level rule, plus the
code's choices (w_g = 1, w_r = 10, normaliser only in training, parameter groups, base loss).
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from cirbench import ComposerContext
from cirbench.losses import (
    NormalizationLayer,
    batch_classification_loss,
    soft_triplet_loss,
)
from cirbench.protocol import BUILTIN_PROTOCOLS
from tests.fixtures.models import TEXTS
from tests.fixtures.models import random_batch as _batch
from tests.fixtures.models import randomise_bn as _randomise_bn
from cirbench_tirg import TIRG, TIRGLastConv, cirbench_composers, tirg_param_groups
from cirbench_tirg.models import ConvGatedResidualComposition, GatedResidualComposition

SMOKE = next(p for p in BUILTIN_PROTOCOLS if p.name == "smoke")
PROTOCOL = dataclasses.replace(SMOKE, embed_dim=16, image_size=32, batch_size=4)
D = 8  # width of the stand-alone composition modules


@pytest.fixture(autouse=True)
def one_thread():
    """Run each test on one intra-op thread: these small models gain little from a second
    thread, and on a shared 2-core machine two threads can wait on each other for many times
    the work itself (measured: 70 s instead of 3 s for the training test under load)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _ctx(protocol=PROTOCOL, base_loss="soft_triplet") -> ComposerContext:
    return ComposerContext(protocol=protocol, train_texts=TEXTS, base_loss=base_loss)


def _bn_eval(z: torch.Tensor, bn: nn.modules.batchnorm._BatchNorm) -> torch.Tensor:
    """BatchNorm with running statistics, written out (channels on dim 1)."""
    shape = (1, -1) + (1,) * (z.ndim - 2)
    mean, var = bn.running_mean.view(shape), bn.running_var.view(shape)
    return (z - mean) / torch.sqrt(var + bn.eps) * bn.weight.view(shape) + bn.bias.view(shape)


def _bn_train(z: torch.Tensor, bn: nn.BatchNorm1d) -> torch.Tensor:
    """BatchNorm with the batch's own statistics (biased variance), written out."""
    mean = z.mean(0, keepdim=True)
    var = ((z - mean) ** 2).mean(0, keepdim=True)
    return (z - mean) / torch.sqrt(var + bn.eps) * bn.weight + bn.bias


def _module(gate_layers: int = 1, w_g: float = 1.0, w_r: float = 10.0) -> GatedResidualComposition:
    torch.manual_seed(0)
    m = GatedResidualComposition(D, gate_layers=gate_layers, w_g=w_g, w_r=w_r).double()
    _randomise_bn(m.gate[0], 1)
    _randomise_bn(m.residual[0], 2)
    return m


def _inputs(b: int = 5, seed: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randn(b, D, generator=g, dtype=torch.float64),
        torch.randn(b, D, generator=g, dtype=torch.float64),
    )


# --- the vector composition (class TIRG) --------------------------------------------------


def test_gate_branch_is_sigmoid_of_linear_relu_bn_of_concat():
    m = _module().eval()
    x, t = _inputs()
    lin = m.gate[2]
    h = F.relu(_bn_eval(torch.cat([x, t], 1), m.gate[0]))
    expected = torch.sigmoid(h @ lin.weight.T + lin.bias)
    assert lin.in_features == 2 * D and lin.out_features == D
    torch.testing.assert_close(m.gate_values(x, t), expected)


def test_residual_branch_is_two_linears_after_bn_relu():
    m = _module().eval()
    x, t = _inputs()
    l1, l2 = m.residual[2], m.residual[4]
    assert (l1.in_features, l1.out_features) == (2 * D, 2 * D)
    assert (l2.in_features, l2.out_features) == (2 * D, D)
    h = F.relu(_bn_eval(torch.cat([x, t], 1), m.residual[0]))
    expected = F.relu(h @ l1.weight.T + l1.bias) @ l2.weight.T + l2.bias
    torch.testing.assert_close(m.residual_values(x, t), expected)


def _composition_by_hand(m: GatedResidualComposition, x, t, bn) -> torch.Tensor:
    z = torch.cat([x, t], 1)
    lg, l1, l2 = m.gate[2], m.residual[2], m.residual[4]
    gate = torch.sigmoid(F.relu(bn(z, m.gate[0])) @ lg.weight.T + lg.bias)
    res = F.relu(F.relu(bn(z, m.residual[0])) @ l1.weight.T + l1.bias) @ l2.weight.T + l2.bias
    return m.w_g * gate * x + m.w_r * res


def test_composition_is_weighted_gated_image_plus_weighted_residual_eval_mode():
    m = _module(w_g=0.7, w_r=3.0).eval()
    x, t = _inputs()
    torch.testing.assert_close(m(x, t), _composition_by_hand(m, x, t, _bn_eval))


def test_composition_in_train_mode_uses_batch_statistics():
    m = _module().train()
    x, t = _inputs(b=6, seed=11)
    torch.testing.assert_close(m(x, t), _composition_by_hand(m, x, t, _bn_train))


@settings(max_examples=40, deadline=None)
@given(
    b=st.integers(2, 8),
    seed=st.integers(0, 2**31 - 1),
    scale=st.floats(1e-3, 1e6),
    train=st.booleans(),
)
def test_gate_lies_strictly_between_zero_and_one(b, seed, scale, train):
    # Freshly initialised float32 module (BN: weight 1, bias 0, running mean 0, var 1). In
    # train mode BN bounds its output by sqrt(B - 1) whatever the scale of the inputs; in eval
    # mode the inputs are kept within [-3, 3]. Either way the pre-sigmoid value stays far from
    # where float32 rounds sigmoid to exactly 0 or 1, so the open interval is checked exactly.
    torch.manual_seed(seed % 1000)
    m = GatedResidualComposition(D).train(train)
    g = torch.Generator().manual_seed(seed)
    amp = scale if train else min(scale, 3.0)
    x = (torch.rand(b, D, generator=g) * 2 - 1) * amp
    t = (torch.rand(b, D, generator=g) * 2 - 1) * amp
    gate = m.gate_values(x, t)
    assert gate.shape == (b, D)
    assert torch.all(gate > 0) and torch.all(gate < 1)


def test_w_r_zero_reduces_to_gated_image_feature():
    m = _module(w_r=0.0).eval()
    x, t = _inputs()
    f = m(x, t)
    torch.testing.assert_close(f, m.gate_values(x, t) * x)
    # and with w_g = 1 the gate bounds the output by the image feature, element-wise
    assert torch.all(f.abs() <= x.abs())


def test_two_layer_gate_option_has_the_extra_linear_layer():
    one, two = _module(gate_layers=1), _module(gate_layers=2)
    lin1 = [l for l in one.gate if isinstance(l, nn.Linear)]
    lin2 = [l for l in two.gate if isinstance(l, nn.Linear)]
    assert [(l.in_features, l.out_features) for l in lin1] == [(2 * D, D)]
    assert [(l.in_features, l.out_features) for l in lin2] == [(2 * D, 2 * D), (2 * D, D)]
    extra = sum(p.numel() for p in two.parameters()) - sum(p.numel() for p in one.parameters())
    assert extra == 2 * D * 2 * D + 2 * D
    # paper: sigmoid(W_g2 ReLU(W_g1 BN([x, t])))
    two.eval()
    x, t = _inputs()
    w1, w2 = two.gate[1], two.gate[3]
    h = F.relu(_bn_eval(torch.cat([x, t], 1), two.gate[0]) @ w1.weight.T + w1.bias)
    torch.testing.assert_close(two.gate_values(x, t), torch.sigmoid(h @ w2.weight.T + w2.bias))


def test_gate_layers_option_reaches_the_composer_and_rejects_other_depths():
    model = TIRG(_ctx(), gate_layers=2)
    assert model.composition.gate_layers == 2
    assert sum(isinstance(l, nn.Linear) for l in model.composition.gate) == 2
    assert sum(isinstance(l, nn.Linear) for l in TIRG(_ctx()).composition.gate) == 1
    with pytest.raises(ValueError, match="gate_layers"):
        GatedResidualComposition(D, gate_layers=3)


def test_w_g_and_w_r_start_at_1_and_10_and_are_learned():
    model = TIRG(_ctx())
    comp = model.composition
    assert comp.w_g.item() == 1.0 and comp.w_r.item() == 10.0
    assert model.normalize.scale.item() == 4.0
    names = {n for n, _ in model.named_parameters()}
    assert {"composition.w_g", "composition.w_r", "normalize.scale"} <= names
    model.train()
    model.training_loss(_batch())["base"].backward()
    for p in (comp.w_g, comp.w_r, model.normalize.scale):
        assert p.requires_grad and p.grad is not None and p.grad.abs().item() > 0
    opt = model.configure_optimizers()[0]
    before = (comp.w_g.item(), comp.w_r.item())
    opt.step()
    assert (comp.w_g.item(), comp.w_r.item()) != before


def test_composer_compose_is_the_composition_of_the_two_encoders():
    model = TIRG(_ctx()).eval()
    b = _batch()
    with torch.no_grad():
        x = model.image_encoder(b.reference_images)
        t = model.text_encoder(b.texts)
        q = model.compose(b.reference_images, b.texts)
        torch.testing.assert_close(q, model.composition(x, t))
        target = model.embed_target(b.target_images)
        torch.testing.assert_close(target, model.image_encoder(b.target_images))
    assert model.compose(b.reference_images, b.texts).shape == (4, PROTOCOL.embed_dim)


# --- the map-level composition (class TIRGLastConv) ----------------------------------------


def test_lastconv_composition_formula_at_map_level():
    torch.manual_seed(0)
    c, d, h, w, b = 4, 3, 3, 2, 5
    m = ConvGatedResidualComposition(c, d, w_g=0.8, w_r=2.5).double()
    _randomise_bn(m.mod[0], 4)
    _randomise_bn(m.gate[0], 5)
    m.eval()
    fmap = torch.randn(b, c, h, w, dtype=torch.float64)
    t = torch.randn(b, d, dtype=torch.float64)
    z = m.tile(fmap, t)
    assert z.shape == (b, c + d, h, w)
    assert torch.equal(z[:, :c], fmap)
    for i in range(h):
        for j in range(w):
            assert torch.equal(z[:, c:, i, j], t)

    def branch(seq):
        bn, conv1, _, conv2 = seq
        assert (conv1.in_channels, conv1.out_channels, conv1.kernel_size) == (c + d, c + d, (3, 3))
        assert (conv2.in_channels, conv2.out_channels, conv2.kernel_size) == (c + d, c, (3, 3))
        y = F.relu(F.conv2d(_bn_eval(z, bn), conv1.weight, conv1.bias, padding=1))
        return F.conv2d(y, conv2.weight, conv2.bias, padding=1)

    expected = m.w_g * torch.sigmoid(branch(m.gate)) * fmap + m.w_r * branch(m.mod)
    out = m(fmap, t)
    assert out.shape == fmap.shape
    torch.testing.assert_close(out, expected)
    # with w_r = 0 it is the gated map
    with torch.no_grad():
        m.w_r.zero_()
    torch.testing.assert_close(m(fmap, t), m.w_g * torch.sigmoid(branch(m.gate)) * fmap)


def test_lastconv_composer_shapes_and_pool_fc():
    protocol = dataclasses.replace(PROTOCOL, image_size=64)
    model = TIRGLastConv(_ctx(protocol)).eval()
    b = _batch(b=3, size=64)
    channels = model.image_encoder.backbone.stage_dims["layer4"]
    assert channels == 512
    assert model.composition.w_g.item() == 1.0 and model.composition.w_r.item() == 10.0
    with torch.no_grad():
        mp = model.compose_map(b.reference_images, b.texts)
        assert mp.shape == (3, channels, 2, 2)  # 64 px / 32
        q = model.compose(b.reference_images, b.texts)
        assert q.shape == (3, protocol.embed_dim)
        torch.testing.assert_close(q, model.image_encoder.fc(mp.mean(dim=(2, 3))))
        tgt = model.embed_target(b.target_images)
        plain = model.image_encoder.backbone.feature_maps(b.target_images, ("layer4",))["layer4"]
        torch.testing.assert_close(tgt, model.image_encoder.fc(plain.mean(dim=(2, 3))))


# --- training: normaliser, loss, one-pass backbone, optimiser ------------------------------


class _CallCounter:
    def __init__(self, module: nn.Module) -> None:
        self.calls = 0
        module.register_forward_hook(self)

    def __call__(self, *_):
        self.calls += 1


@pytest.mark.parametrize("cls", [TIRG, TIRGLastConv])
def test_normaliser_is_applied_in_training_loss_only(cls):
    model = cls(_ctx(base_loss="batch_classification")).eval()
    counter = _CallCounter(model.normalize)
    b = _batch()
    with torch.no_grad():
        q = model.compose(b.reference_images, b.texts)
        t = model.embed_target(b.target_images)
        assert counter.calls == 0
        # raw features: not scaled to the normaliser's norm 4
        assert not torch.allclose(q.norm(dim=1), torch.full((4,), 4.0))
        loss = model.training_loss(b)["base"]
        assert counter.calls == 2
        # eval mode (BN running stats): the one-pass loss equals the loss of the raw features
        qn, tn = 4.0 * F.normalize(q, dim=1), 4.0 * F.normalize(t, dim=1)
        expected = batch_classification_loss(qn, tn)
        torch.testing.assert_close(loss, expected)


@pytest.mark.parametrize("name", ["soft_triplet", "batch_classification"])
def test_loss_follows_the_datasets_base_loss(name):
    model = TIRG(_ctx(base_loss=name)).eval()
    b = _batch()
    norm = NormalizationLayer(4.0)
    with torch.no_grad():
        qn = norm(model.compose(b.reference_images, b.texts))
        tn = norm(model.embed_target(b.target_images))
        torch.manual_seed(7)
        parts = model.training_loss(b)
        torch.manual_seed(7)
        if name == "soft_triplet":
            expected = soft_triplet_loss(qn, tn)
            other = batch_classification_loss(qn, tn)
        else:
            expected = batch_classification_loss(qn, tn)
            other = soft_triplet_loss(qn, tn)
    assert set(parts) == {"base"}
    torch.testing.assert_close(parts["base"], expected)
    assert not torch.allclose(parts["base"], other)


@pytest.mark.parametrize("cls", [TIRG, TIRGLastConv])
def test_one_pass_backbone_equals_two_passes_in_eval_mode(cls):
    torch.manual_seed(0)
    one = cls(_ctx(base_loss="batch_classification")).eval()
    two = cls(_ctx(base_loss="batch_classification"), joint_backbone=False).eval()
    two.load_state_dict(one.state_dict())
    b = _batch()
    with torch.no_grad():
        torch.testing.assert_close(one.training_loss(b)["base"], two.training_loss(b)["base"])
        # in train mode the backbone's BatchNorm sees the joint 2B batch instead: it differs
        # (same dropout mask on both sides, so BatchNorm is the only difference)
        one.train(), two.train()
        torch.manual_seed(1)
        joint = one.training_loss(b)["base"]
        torch.manual_seed(1)
        separate = two.training_loss(b)["base"]
        assert not torch.allclose(joint, separate)


def _ids(params) -> list[int]:
    return sorted(id(p) for p in params)


@pytest.mark.parametrize("cls", [TIRG, TIRGLastConv])
def test_single_parameter_group_without_pretrained_weights(cls):
    model = cls(_ctx())
    (opt,) = model.configure_optimizers()
    assert isinstance(opt, torch.optim.SGD)
    assert len(opt.param_groups) == 1
    group = opt.param_groups[0]
    assert group["lr"] == 0.01 and group["momentum"] == 0.9
    assert group["weight_decay"] == PROTOCOL.weight_decay
    assert _ids(group["params"]) == _ids(model.parameters())


@pytest.mark.parametrize("cls", [TIRG, TIRGLastConv])
def test_pretrained_protocol_gives_backbone_a_tenth_of_the_lr(cls):
    # Built without weights (none are downloaded); the optimiser only reads the flag.
    model = cls(_ctx())
    groups = tirg_param_groups(model, model.image_encoder, lr=0.02, pretrained=True)
    by_name = {g["name"]: g for g in groups}
    assert set(by_name) == {"image_fc", "backbone", "rest"}
    assert by_name["image_fc"]["lr"] == 0.02 and by_name["rest"]["lr"] == 0.02
    assert by_name["backbone"]["lr"] == pytest.approx(0.002)
    assert _ids(by_name["image_fc"]["params"]) == _ids(model.image_encoder.fc.parameters())
    assert _ids(by_name["backbone"]["params"]) == _ids(model.image_encoder.backbone.parameters())
    rest = _ids(by_name["rest"]["params"])
    assert set(_ids(model.composition.parameters())) <= set(rest)
    assert set(_ids(model.text_encoder.parameters())) <= set(rest)
    assert id(model.normalize.scale) in rest
    # a partition: every parameter exactly once
    all_ids = [i for g in groups for i in _ids(g["params"])]
    assert sorted(all_ids) == _ids(model.parameters())
    # and configure_optimizers uses it when the protocol says pretrained=True
    model.ctx = dataclasses.replace(
        model.ctx, protocol=dataclasses.replace(PROTOCOL, pretrained=True, weight_decay=5e-5)
    )
    (opt,) = model.configure_optimizers()
    lrs = {g["name"]: g["lr"] for g in opt.param_groups}
    assert lrs == {"image_fc": 0.01, "backbone": pytest.approx(0.001), "rest": 0.01}
    assert all(g["weight_decay"] == 5e-5 and g["momentum"] == 0.9 for g in opt.param_groups)


@pytest.mark.parametrize("base_loss", ["soft_triplet", "batch_classification"])
def test_a_few_training_steps_reduce_the_loss(base_loss):
    torch.manual_seed(0)
    model = TIRG(_ctx(base_loss=base_loss)).train()
    (opt,) = model.configure_optimizers()
    b = _batch(b=4, seed=5)

    def deterministic_loss() -> float:
        """The loss on the batch with every negative (no sampling) and a fixed dropout mask."""
        torch.manual_seed(123)
        with torch.no_grad():
            q, t = model._query_and_target(b)
            q, t = model.normalize(q), model.normalize(t)
            if base_loss == "soft_triplet":
                return soft_triplet_loss(q, t, negatives_per_anchor=None).item()
            return batch_classification_loss(q, t).item()

    before = deterministic_loss()
    losses = []
    for _ in range(8):
        opt.zero_grad()
        loss = model.training_loss(b)["base"]
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(torch.isfinite(torch.tensor(losses)))
    assert sum(losses[-2:]) / 2 < 0.5 * sum(losses[:2]) / 2
    assert deterministic_loss() < 0.5 * before


# --- registration ---------------------------------------------------------------------------


def test_plugin_registers_both_composers():
    specs = {s.name: s for s in cirbench_composers()}
    assert set(specs) == {"tirg", "tirg-lastconv"}
    assert "CVPR 2019" in specs["tirg"].paper
    assert isinstance(specs["tirg"].build(_ctx()), TIRG)

    from cirbench.plugins import load_registry

    registry = load_registry()
    assert {"tirg", "tirg-lastconv"} <= set(registry.composers)


# --- TIRG's groups for every model; one group on full-css (issue 11) ---------------------------


def _with_protocol(model, **changes):
    model.ctx = dataclasses.replace(model.ctx, protocol=dataclasses.replace(PROTOCOL, **changes))
    return model


@pytest.mark.parametrize("name", ["image-only", "text-only", "concat", "tirg", "tirg-lastconv"])
def test_every_model_gets_tirgs_groups_under_a_pretrained_protocol(name):
    """TIRG's main.py builds the same SGD groups for every model, baselines included: with
    ImageNet weights the trunk learns at 0.1 lr (weights are not loaded here: the optimiser
    only reads the protocol's flag)."""
    from cirbench_baselines import cirbench_composers as baselines

    specs = {s.name: s for s in baselines() + cirbench_composers()}
    torch.manual_seed(0)
    model = _with_protocol(specs[name].build(_ctx()), pretrained=True)
    (opt,) = model.configure_optimizers()
    lrs = {g["name"]: g["lr"] for g in opt.param_groups}
    assert lrs == {"image_fc": 0.01, "backbone": pytest.approx(0.001), "rest": 0.01}
    backbone = next(g for g in opt.param_groups if g["name"] == "backbone")["params"]
    assert _ids(backbone) == _ids(model.image_encoder.backbone.parameters())
    assert sorted(i for g in opt.param_groups for i in _ids(g["params"])) == _ids(model.parameters())
    assert all(g["momentum"] == 0.9 for g in opt.param_groups)


@pytest.mark.parametrize("name", ["concat", "tirg"])
def test_full_css_trains_one_group_as_tirgs_code_does_for_css(name):
    from cirbench.plugins import load_registry
    from cirbench_baselines import cirbench_composers as baselines

    full_css = load_registry().protocols["full-css"]
    assert full_css.pretrained and full_css.backbone_lr_mult == 1.0
    specs = {s.name: s for s in baselines() + cirbench_composers()}
    torch.manual_seed(0)
    model = _with_protocol(specs[name].build(_ctx()), pretrained=True, backbone_lr_mult=1.0)
    (opt,) = model.configure_optimizers()
    assert len(opt.param_groups) == 1 and opt.param_groups[0]["lr"] == 0.01
    assert _ids(opt.param_groups[0]["params"]) == _ids(model.parameters())
