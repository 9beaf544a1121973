"""Conformance checks for composers: the contract of :class:`cirbench.Composer`, executable.

Each check is ``check_x(composer, ctx)`` with ``composer`` a registered name or a
:class:`~cirbench.ComposerSpec` and ``ctx`` a :class:`~cirbench.testing.CheckContext`. It
builds the composer afresh (seeded, as the runner does), feeds it inputs from
``ctx.train_dataset()`` and raises :class:`~cirbench.testing.CheckFailed` saying what is
wrong. :data:`COMPOSER_CHECKS` lists them in the order they run.

Two declarations a composer class may make (plain class attributes, read with ``getattr``):

* ``conformance_no_gradient: tuple[str, ...]``: ``fnmatch`` patterns of parameter names
  that the training objective legitimately leaves without a gradient (a head used only at
  evaluation, say); :func:`check_gradients` ignores them. Frozen parameters
  (``requires_grad=False``) never need declaring.
* ``conformance_expected_failures: dict[str, str]``: check name -> reason; such a check is
  reported ``xfailed`` when it fails and ``xpassed`` (a failure) when it passes.
"""

from __future__ import annotations

import fnmatch
import io
import math
import numbers
from typing import Mapping, Sequence, Union

import torch

from cirbench.composer import Composer, ComposerSpec, TrainBatch, supports_attention_maps
from cirbench.losses import BASE_LOSSES
from cirbench.testing.base import SkipCheck, fail
from cirbench.testing.context import CheckContext
from cirbench.train import DivergedError, train_step

#: What a composer check takes: a registered name or a spec.
Subject = Union[str, ComposerSpec]

#: Batch sizes the shape checks feed in eval mode (1 included: evaluation's last batch).
EVAL_BATCH_SIZES = (1, 2, 5)


# --- helpers -------------------------------------------------------------------------------------
def _shorten(names: Sequence[str], limit: int = 8) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names) - limit} more)" if len(names) > limit else "")


def _embed(composer: Composer, images: torch.Tensor, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """``(compose(images, texts), embed_target(images))`` in eval mode, as evaluation runs, on
    copies of the inputs (so that only :func:`check_inputs_not_mutated` sees a mutation)."""
    composer.eval()
    with torch.inference_mode():
        return composer.compose(images.clone(), list(texts)), composer.embed_target(images.clone())


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Bitwise equal, NaN equal to NaN (a NaN is another check's failure)."""
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    a, b = a.detach().cpu(), b.detach().cpu()
    if not a.is_floating_point():
        return torch.equal(a, b)
    return bool(((a == b) | (torch.isnan(a) & torch.isnan(b))).all())


def _expect_embedding(what: str, out: object, batch: int, device: torch.device) -> torch.Tensor:
    if not isinstance(out, torch.Tensor):
        fail(f"{what} returned {type(out).__name__}, expected a torch.Tensor [B, D]")
    assert isinstance(out, torch.Tensor)
    if out.ndim != 2 or out.shape[0] != batch:
        fail(f"{what} on a batch of {batch} returned shape {tuple(out.shape)}, expected [{batch}, D]")
    if not out.is_floating_point():
        fail(f"{what} returned dtype {out.dtype}, expected a floating-point tensor")
    if out.device != device:
        fail(f"{what} returned a tensor on {out.device}, expected the composer's device {device}")
    if not torch.isfinite(out).all():
        fail(f"{what} on a batch of {batch} returned non-finite values (NaN or inf)")
    return out


def _optimizers(composer: Composer) -> list[torch.optim.Optimizer]:
    opts = composer.configure_optimizers()
    if not isinstance(opts, (list, tuple)) or not opts:
        fail(f"configure_optimizers returned {opts!r}, expected a non-empty list of optimisers")
    for opt in opts:
        if not isinstance(opt, torch.optim.Optimizer):
            fail(f"configure_optimizers returned a {type(opt).__name__}, expected torch.optim.Optimizer")
    return list(opts)


def _train_step(composer: Composer, batch: TrainBatch) -> dict[str, float]:
    """One training step (step 0) exactly as the engine takes it
    (:func:`cirbench.train.train_step`, on fresh optimisers); returns the loss parts."""
    composer.train()
    opts = _optimizers(composer)
    try:
        return train_step(composer, batch, opts, step=0)
    except DivergedError as exc:
        fail(f"one training step on a fresh model: {exc} (the engine ends such a run as diverged)")
    except (TypeError, ValueError) as exc:
        fail(f"one training step as the engine takes it: {exc}")
    raise AssertionError("unreachable")


def _state_diff(a: Mapping[str, object], b: Mapping[str, object]) -> list[str]:
    """Keys of two state dicts that differ (missing on one side, or unequal values)."""
    diff = sorted(set(a) ^ set(b))
    for k in sorted(set(a) & set(b)):
        x, y = a[k], b[k]
        if isinstance(x, torch.Tensor) and isinstance(y, torch.Tensor):
            if not _same(x, y):
                diff.append(k)
        elif x != y:
            diff.append(k)
    return diff


def _no_gradient_patterns(composer: Composer) -> tuple[str, ...]:
    patterns = getattr(composer, "conformance_no_gradient", ()) or ()
    if isinstance(patterns, str):
        patterns = (patterns,)
    return tuple(str(p) for p in patterns)


def _exempt(name: str, patterns: Sequence[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


def _snapshot(batch: TrainBatch) -> dict[str, object]:
    return {
        "reference_images": batch.reference_images.clone(),
        "texts": list(batch.texts),
        "target_images": batch.target_images.clone(),
        "reference_ids": batch.reference_ids.clone(),
        "target_ids": batch.target_ids.clone(),
    }


def _mutated(before: Mapping[str, object], after: Mapping[str, object]) -> list[str]:
    out = []
    for k, v in before.items():
        w = after[k]
        same = torch.equal(v, w) if isinstance(v, torch.Tensor) else v == w  # type: ignore[arg-type]
        if not same:
            out.append(k)
    return out


# --- the checks ----------------------------------------------------------------------------------
def check_output_shapes(composer: Subject, ctx: CheckContext) -> None:
    """In eval mode, ``compose`` and ``embed_target`` return finite floating-point ``[B, D]``
    tensors on the composer's device for batches of 1, 2 and 5."""
    model = ctx.build_composer(composer)
    for b in EVAL_BATCH_SIZES:
        images, texts = ctx.query_inputs(b, device=model.device)
        q, t = _embed(model, images, texts)
        _expect_embedding("compose", q, b, model.device)
        _expect_embedding("embed_target", t, b, model.device)


def check_embedding_size(composer: Subject, ctx: CheckContext) -> None:
    """Query and target embeddings have the same size D, the protocol's ``embed_dim``."""
    model = ctx.build_composer(composer)
    images, texts = ctx.query_inputs(2, device=model.device)
    q, t = _embed(model, images, texts)
    dq, dt = int(q.shape[-1]), int(t.shape[-1])
    if dq != dt:
        fail(f"compose gives D={dq} but embed_target gives D={dt}: queries and gallery images "
             "must share one embedding space")
    if dq != ctx.protocol.embed_dim:
        fail(f"embeddings have D={dq}, the protocol's embed_dim is {ctx.protocol.embed_dim}: "
             "read the size from ctx.protocol.embed_dim")


def check_seeded_determinism(composer: Subject, ctx: CheckContext) -> None:
    """Built twice after seeding with the same seed: identical ``state_dict`` and identical
    eval outputs (all randomness of the build comes from the seeded generators)."""
    a = ctx.build_composer(composer, seed=0)
    b = ctx.build_composer(composer, seed=0)
    diff = _state_diff(a.state_dict(), b.state_dict())
    if diff:
        fail(f"two builds after seed_everything(0) differ in state_dict entries {_shorten(diff)}: "
             "draw initial weights from torch's seeded generator, not from an unseeded source")
    images, texts = ctx.query_inputs(3, device=a.device)
    qa, ta = _embed(a, images, texts)
    qb, tb = _embed(b, images, texts)
    if not _same(qa, qb):
        fail("two builds after seed_everything(0) give different compose outputs in eval mode")
    if not _same(ta, tb):
        fail("two builds after seed_everything(0) give different embed_target outputs in eval mode")


def check_eval_determinism(composer: Subject, ctx: CheckContext) -> None:
    """In eval mode, calling ``compose`` / ``embed_target`` twice on the same input gives
    identical outputs (no dropout or sampling at evaluation, no state updated by a call)."""
    model = ctx.build_composer(composer)
    images, texts = ctx.query_inputs(3, device=model.device)
    q1, t1 = _embed(model, images, texts)
    q2, t2 = _embed(model, images, texts)
    if not _same(q1, q2):
        fail(f"compose gives different outputs on two calls in eval mode (max difference "
             f"{(q1 - q2).abs().max().item():.3g}): turn off dropout/sampling in eval mode")
    if not _same(t1, t2):
        fail(f"embed_target gives different outputs on two calls in eval mode (max difference "
             f"{(t1 - t2).abs().max().item():.3g}): turn off dropout/sampling in eval mode")


def check_batch_independence(composer: Subject, ctx: CheckContext) -> None:
    """In eval mode, an item's embedding does not depend on the rest of its batch (evaluation
    embeds in chunks of any size): a batch of 4 equals its two halves (to float tolerance)."""
    model = ctx.build_composer(composer)
    images, texts = ctx.query_inputs(4, device=model.device)
    q, t = _embed(model, images, texts)
    q1, t1 = _embed(model, images[:2], texts[:2])
    q2, t2 = _embed(model, images[2:], texts[2:])
    for what, whole, parts in (("compose", q, (q1, q2)), ("embed_target", t, (t1, t2))):
        if whole.shape[0] != 4 or not torch.allclose(whole, torch.cat(parts), rtol=1e-4, atol=1e-5):
            fail(f"{what} in eval mode gives an item a different embedding in a batch of 4 than "
                 "in a batch of 2: embeddings must not depend on the other items of a batch "
                 "(BatchNorm in eval mode, no batch statistics)")


def check_loss_parts(composer: Subject, ctx: CheckContext) -> None:
    """The training objective (``training_loss``, or ``training_step`` for composers with
    ``automatic_optimization = False``) returns a non-empty dict of finite scalar tensors
    named by non-empty strings, under every base loss."""
    for base in BASE_LOSSES:
        model = ctx.build_composer(composer, base_loss=base)
        batch = ctx.train_batch(device=model.device)
        model.train()
        model.on_train_step_start(0)
        manual = not model.automatic_optimization
        parts = model.training_step(batch, _optimizers(model), 0) if manual else model.training_loss(batch)
        where = "training_step" if manual else "training_loss"
        if not isinstance(parts, Mapping) or not parts:
            fail(f"{where} (base loss {base}) returned {type(parts).__name__} {parts!r:.80}, "
                 "expected a non-empty dict of named loss parts")
        for name, value in parts.items():
            if not isinstance(name, str) or not name.strip():
                fail(f"{where} (base loss {base}) has a loss part named {name!r}: "
                     "name every part with a non-empty str")
            if isinstance(value, torch.Tensor):
                if value.ndim != 0:
                    fail(f"{where} (base loss {base}): part {name!r} has shape "
                         f"{tuple(value.shape)}, expected a scalar tensor (reduce it, e.g. .mean())")
                if not value.is_floating_point():
                    fail(f"{where} (base loss {base}): part {name!r} has dtype {value.dtype}, "
                         "expected floating point")
                if not torch.isfinite(value.detach()).all():
                    fail(f"{where} (base loss {base}): part {name!r} is not finite "
                         f"({value.item()}) on a fresh model")
            elif manual and isinstance(value, numbers.Real) and not isinstance(value, bool):
                if not math.isfinite(float(value)):
                    fail(f"training_step (base loss {base}): part {name!r} is not finite ({value})")
            else:
                fail(f"{where} (base loss {base}): part {name!r} is a {type(value).__name__}, "
                     "expected a scalar torch.Tensor")


def check_gradients(composer: Subject, ctx: CheckContext) -> None:
    """Every trainable parameter gets a finite gradient from ``sum(training_loss(batch))``
    under every base loss (with ``automatic_optimization = False``: every trainable
    parameter changes in one ``training_step``). Frozen parameters and those matching the
    composer's ``conformance_no_gradient`` patterns are exempt."""
    for base in BASE_LOSSES:
        model = ctx.build_composer(composer, base_loss=base)
        patterns = _no_gradient_patterns(model)
        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad and not _exempt(n, patterns)]
        batch = ctx.train_batch(device=model.device)
        model.train()
        model.on_train_step_start(0)
        hint = ("; if that is intended, freeze them (requires_grad=False) or list them in the "
                "composer's conformance_no_gradient (fnmatch patterns)")
        if not model.automatic_optimization:
            before = {n: p.detach().clone() for n, p in named}
            model.training_step(batch, _optimizers(model), 0)
            unchanged = [n for n, p in named if torch.equal(before[n], p.detach())]
            if unchanged:
                fail(f"{len(unchanged)} trainable parameter(s) did not change in one "
                     f"training_step (base loss {base}): {_shorten(unchanged)}{hint}")
            continue
        for p in model.parameters():
            p.grad = None
        total = sum(model.training_loss(batch).values())
        if not isinstance(total, torch.Tensor) or not total.requires_grad:
            fail(f"sum(training_loss) (base loss {base}) does not require grad: "
                 "nothing would be trained")
        total.backward()  # type: ignore[union-attr]
        missing = [n for n, p in named if p.grad is None]
        if missing:
            fail(f"{len(missing)} trainable parameter(s) got no gradient from sum(training_loss) "
                 f"(base loss {base}): {_shorten(missing)}{hint}")
        bad = [n for n, p in named if p.grad is not None and not torch.isfinite(p.grad).all()]
        if bad:
            fail(f"non-finite gradients (base loss {base}) in {_shorten(bad)}")


def check_inputs_not_mutated(composer: Subject, ctx: CheckContext) -> None:
    """``compose``, ``embed_target`` and the training objective leave their inputs (images,
    texts, the training batch) unchanged."""
    model = ctx.build_composer(composer)
    images, texts = ctx.query_inputs(3, device=model.device)
    img0, txt0 = images.clone(), list(texts)
    model.eval()
    with torch.inference_mode():
        model.compose(images, texts)
    if not torch.equal(images, img0):
        fail("compose modified its images in place (eval mode): clone before in-place ops")
    if texts != txt0:
        fail("compose modified its list of texts")
    with torch.inference_mode():
        model.embed_target(images)
    if not torch.equal(images, img0):
        fail("embed_target modified its images in place (eval mode): clone before in-place ops")
    batch = ctx.train_batch(device=model.device)
    before = _snapshot(batch)
    where = "training_loss" if model.automatic_optimization else "training_step"
    _train_step(model, batch)
    changed = _mutated(before, _snapshot(batch))
    if changed:
        fail(f"{where} modified its batch: {', '.join(changed)} changed")


def check_state_dict_round_trip(composer: Subject, ctx: CheckContext) -> None:
    """After a training step, ``state_dict`` saved with ``torch.save`` and loaded into a freshly
    built composer (another seed) gives an identical state and identical eval outputs."""
    a = ctx.build_composer(composer, seed=0)
    _train_step(a, ctx.train_batch(device=a.device))
    buf = io.BytesIO()
    torch.save(a.state_dict(), buf)
    buf.seek(0)
    b = ctx.build_composer(composer, seed=1)
    state = torch.load(buf, map_location=b.device, weights_only=True)  # as saved models are loaded
    try:
        b.load_state_dict(state)
    except Exception as exc:
        fail(f"load_state_dict of a saved state_dict into a fresh build failed: "
             f"{type(exc).__name__}: {exc}")
    diff = _state_diff(a.state_dict(), b.state_dict())
    if diff:
        fail(f"after load_state_dict the fresh build's state differs in {_shorten(diff)}")
    images, texts = ctx.query_inputs(3, device=a.device)
    qa, ta = _embed(a, images, texts)
    qb, tb = _embed(b, images, texts)
    if not _same(qa, qb) or not _same(ta, tb):
        which = "compose" if not _same(qa, qb) else "embed_target"
        fail(f"after a state_dict round trip {which} gives different outputs in eval mode: "
             "some state that decides the outputs is not in state_dict (register it as a "
             "parameter or buffer)")


def check_parameter_counts(composer: Subject, ctx: CheckContext) -> None:
    """``parameter_counts()`` follows :meth:`cirbench.Composer.parameter_counts`'s rule:
    ``total`` = the sum of ``numel`` over ``parameters()``; ``trainable`` = over the distinct
    parameters the optimisers of ``configure_optimizers()`` hold (what training updates,
    whatever is frozen at step 0); ``frozen`` = the rest; ``frozen_pretrained`` at most
    ``frozen``."""
    model = ctx.build_composer(composer)
    params = list(model.parameters())
    trained = {id(p) for opt in _optimizers(model) for g in opt.param_groups for p in g["params"]}
    expected = {
        "total": sum(p.numel() for p in params),
        "trainable": sum(p.numel() for p in params if id(p) in trained),
    }
    expected["frozen"] = expected["total"] - expected["trainable"]
    counts = model.parameter_counts()
    if not isinstance(counts, Mapping):
        fail(f"parameter_counts returned {type(counts).__name__}, expected a dict")
    for key, value in expected.items():
        if key not in counts:
            fail(f"parameter_counts has no {key!r} (expected keys: total, trainable, frozen, "
                 "frozen_pretrained)")
        if counts[key] != value:
            what = "the optimisers' parameters" if key == "trainable" else "the parameters"
            fail(f"parameter_counts reports {key}={counts[key]}, {what} sum to {value}")
    fp = counts.get("frozen_pretrained")
    if not isinstance(fp, int) or not 0 <= fp <= expected["frozen"]:
        fail(f"parameter_counts reports frozen_pretrained={fp!r}, expected an int between 0 "
             f"and frozen={expected['frozen']}")
    if expected["trainable"] == 0:
        fail("the composer has no trainable parameter")


def check_optimizers(composer: Subject, ctx: CheckContext) -> None:
    """``configure_optimizers`` returns a non-empty list of optimisers whose parameter groups
    hold every trainable parameter exactly once, and no tensor that is not a parameter of
    the composer (frozen parameters may be included, e.g. to unfreeze them later)."""
    model = ctx.build_composer(composer)
    names = {id(p): n for n, p in model.named_parameters()}
    seen: dict[int, int] = {}
    foreign = 0
    for opt in _optimizers(model):
        for group in opt.param_groups:
            for p in group["params"]:
                if id(p) not in names:
                    foreign += 1
                seen[id(p)] = seen.get(id(p), 0) + 1
    if foreign:
        fail(f"configure_optimizers holds {foreign} tensor(s) that are not parameters of the composer")
    missing = [n for n, p in model.named_parameters() if p.requires_grad and id(p) not in seen]
    if missing:
        fail(f"{len(missing)} trainable parameter(s) are in no optimiser: {_shorten(missing)}")
    twice = [names[i] for i, c in seen.items() if c > 1]
    if twice:
        fail(f"parameter(s) listed more than once across the optimisers' groups: {_shorten(twice)}")


def check_attention_depends_on_text(composer: Subject, ctx: CheckContext) -> None:
    """For a composer with ``attention_maps``: at the protocol's image size, giving the same
    reference images other texts changes the attention map at every level (in eval mode, on
    a fresh build). A level whose map cannot depend on the text (e.g. a 1x1 map: a softmax
    over one position is 1 whatever the text) makes the composer's attention inert there:
    choose the protocol's ``feature_stages`` or image size so that every map has at least 2
    positions. Skipped for composers without attention maps."""
    model = ctx.build_composer(composer)
    if not supports_attention_maps(model):
        raise SkipCheck("the composer has no attention_maps")
    n = 4
    images, texts = ctx.query_inputs(n, device=model.device)
    _, pool = ctx.query_inputs(4 * n, seed=1, device=model.device)
    other = []
    for t in texts:
        alt = [u for u in pool if u != t]
        if not alt:
            raise SkipCheck("the training data has a single distinct text: nothing to vary")
        other.append(alt[len(other) % len(alt)])
    model.eval()
    with torch.inference_mode():
        a = model.attention_maps(images.clone(), list(texts))
        b = model.attention_maps(images.clone(), other)
    if not isinstance(a, Mapping) or not a:
        fail(f"attention_maps returned {type(a).__name__} {a!r:.80}, expected a non-empty "
             "dict {level: [B, H, W]}")
    inert = []
    for level, m in a.items():
        m2 = b.get(level)
        if not isinstance(m, torch.Tensor) or not isinstance(m2, torch.Tensor) or m.shape != m2.shape:
            fail(f"attention_maps gives level {level!r} different shapes or types for two texts")
        diff = float((m.float() - m2.float()).abs().max()) if m.numel() else 0.0
        if not diff > 1e-6:
            inert.append(f"{level} ({'x'.join(str(s) for s in m.shape[1:])} map, max "
                         f"difference {diff:.3g})")
    if inert:
        fail(f"the attention does not depend on the text at level(s) {', '.join(inert)} "
             f"under protocol {ctx.protocol.name!r} ({ctx.protocol.image_size} px): that "
             "level's attention is inert (a map of 1 position cannot depend on the text; use "
             "feature stages or an image size that give maps of at least 2x2)")


def _check_device(composer: Subject, ctx: CheckContext, device: str) -> None:
    model = ctx.build_composer(composer, device=device)
    want = torch.device(device)
    off = [n for n, t in list(model.named_parameters()) + list(model.named_buffers())
           if t.device.type != want.type]
    if off:
        fail(f"after .to({device!r}) these tensors are not on {device}: {_shorten(off)} "
             "(keep tensors as parameters or buffers, or create them on the input's device)")
    images, texts = ctx.query_inputs(2, device=model.device)
    q, t = _embed(model, images, texts)
    _expect_embedding("compose", q, 2, model.device)
    _expect_embedding("embed_target", t, 2, model.device)
    _train_step(model, ctx.train_batch(device=model.device))  # refuses loss parts on another device


def check_cpu(composer: Subject, ctx: CheckContext) -> None:
    """Built with ``device="cpu"``: parameters, buffers and outputs on the CPU; one training
    step runs."""
    _check_device(composer, ctx, "cpu")


def check_cuda(composer: Subject, ctx: CheckContext) -> None:
    """As :func:`check_cpu` on ``cuda`` (skipped when CUDA is not available)."""
    if not torch.cuda.is_available():
        raise SkipCheck("CUDA not available")
    _check_device(composer, ctx, "cuda")


#: Every composer check, in the order they run.
COMPOSER_CHECKS = (
    check_output_shapes,
    check_embedding_size,
    check_seeded_determinism,
    check_eval_determinism,
    check_batch_independence,
    check_loss_parts,
    check_gradients,
    check_inputs_not_mutated,
    check_state_dict_round_trip,
    check_parameter_counts,
    check_optimizers,
    check_attention_depends_on_text,
    check_cpu,
    check_cuda,
)

__all__ = [c.__name__ for c in COMPOSER_CHECKS] + ["COMPOSER_CHECKS", "EVAL_BATCH_SIZES"]
