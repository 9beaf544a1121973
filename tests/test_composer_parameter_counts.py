"""Honest parameter counts (issue 11): ``trainable`` is what training updates, counted as it is
during training (not in the state of step 0 while a warm-up freezes a backbone), and frozen
pretrained encoders are reported apart (``frozen_pretrained``).

The reference: the parameters that receive a gradient (``.grad is not None`` after a step)
during a short training run of the engine's own loop. Every reference composer of the main grid is checked, and SAC once more with its
backbone warm-up forced on (1 frozen step of 4), the case the old count got wrong.
"""

from __future__ import annotations

import dataclasses
from functools import partial

import pytest

from cirbench import ComposerSpec
from cirbench.plugins import load_registry
from cirbench.protocol import BUILTIN_PROTOCOLS
from cirbench.testing import CheckContext
from cirbench.train import train

# tiny tensors: one torch thread is as fast on a quiet machine and much faster on a busy one
pytestmark = pytest.mark.usefixtures("one_torch_thread")

REGISTRY = load_registry()
SMOKE = next(p for p in BUILTIN_PROTOCOLS if p.name == "smoke")
CONTEXT = CheckContext(registry=REGISTRY)
MAIN = ["image-only", "text-only", "concat", "tirg", "tirg-lastconv", "composeae", "sac"]


def _params_with_gradients(model, steps: int) -> int:
    """Train ``model`` ``steps`` steps with the engine's loop on the context's random data;
    the number of parameters (numel) whose ``.grad`` was not None after some step. Gradients
    are collected (and cleared) at the start of the next step and after the last one: every
    optimiser step of the engine and of SAC's manual step leaves its gradients in place
    until then."""
    got: set[int] = set()

    def collect():
        for p in model.parameters():
            if p.grad is not None:
                got.add(id(p))
                p.grad = None

    start = model.on_train_step_start

    def on_start(step):
        collect()
        start(step)

    model.on_train_step_start = on_start
    try:
        train(model, CONTEXT.train_dataset(), dataclasses.replace(SMOKE, iterations=steps), seed=0)
    finally:
        del model.on_train_step_start
    collect()
    return sum(p.numel() for p in model.parameters() if id(p) in got)


def _sac_frozen_warmup():
    from cirbench_sac import SAC, SAC_DEFAULTS

    return ComposerSpec("sac-warmup", partial(SAC, **{**SAC_DEFAULTS, "freeze_backbone": True,
                                                      "freeze_backbone_fraction": 0.25}))


def _sac_quick_stages():
    """SAC on quick's levels (layer2+layer3): layer4 is never read, so it must not be held."""
    from cirbench_sac import SAC, SAC_DEFAULTS

    return ComposerSpec("sac-quick-stages", partial(SAC, **{**SAC_DEFAULTS, "stages": ("layer2", "layer3")}))


SPECIAL = {"sac-frozen-warmup": _sac_frozen_warmup, "sac-quick-stages": _sac_quick_stages}


@pytest.mark.parametrize("name", MAIN + ["sac-l1-only", *SPECIAL])
def test_trainable_count_equals_parameters_receiving_gradients(name):
    spec = SPECIAL[name]() if name in SPECIAL else name
    model = CONTEXT.build_composer(spec)
    counts = model.parameter_counts()  # asked before training, as the runner does
    if name == "sac-frozen-warmup":
        assert model.freeze_steps == 1
        assert not any(p.requires_grad for p in model.backbone.parameters())  # step-0 state
    assert counts["trainable"] == _params_with_gradients(model, steps=4)
    assert counts["total"] == sum(p.numel() for p in model.parameters())
    assert counts["frozen"] == counts["total"] - counts["trainable"]


def test_frozen_pretrained_is_the_frozen_sentence_encoder():
    model = CONTEXT.build_composer("composeae")
    counts = model.parameter_counts()
    encoder = [m for m in model.modules() if getattr(m, "weights_name", "")]
    assert encoder, "composeae loads a pretrained sentence encoder"
    frozen_encoder = sum(p.numel() for m in encoder for p in m.parameters() if not p.requires_grad)
    # all-MiniLM-L6-v2 counted by hand (BERT, vocabulary 30522, hidden 384, 6 layers,
    # intermediate 1536, 512 positions, 2 token types; the pooler is not loaded):
    #   embeddings (30522 + 512 + 2) * 384 + LayerNorm 768                  = 11_918_592
    #   per layer 4 * (384 * 384 + 384) + (384 * 1536 + 1536) + (1536 * 384 + 384) + 2 * 768
    #             = 591_360 + 591_360 + 590_208 + 1_536                      =  1_774_464
    #   11_918_592 + 6 * 1_774_464                                           = 22_565_376
    assert frozen_encoder == 22_565_376
    assert counts["frozen_pretrained"] == frozen_encoder == counts["frozen"]
    # a model without pretrained weights reports none
    assert CONTEXT.build_composer("tirg").parameter_counts()["frozen_pretrained"] == 0
