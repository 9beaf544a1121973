"""The training engine (cirbench/train.py) on the smoke protocol: determinism, resume, checkpoints
that load safely, divergence."""

from __future__ import annotations

import dataclasses
import io
import pathlib
import random

import numpy as np
import pytest
import torch

from cirbench import ComposerContext
from cirbench.evaluate import evaluate
from cirbench.plugins import load_registry
from cirbench.train import CheckpointError, DivergedError, seed_everything, train


def _build(name, protocol, dataset):
    seed_everything(0)
    ctx = ComposerContext(protocol, dataset.train_texts(), dataset.base_loss, dataset.name)
    return load_registry().composer(name).build(ctx)


def test_same_seed_gives_identical_metrics(smoke, css_tiny):
    outs = []
    for _ in range(2):
        model = _build("concat", smoke, css_tiny)
        stats = train(model, css_tiny, smoke, seed=0)
        ev = evaluate(model, css_tiny, smoke.ks, batch_size=64)
        outs.append((stats.final_loss, ev.overall, ev.ranks))
    assert outs[0] == outs[1]
    assert stats.iterations == smoke.iterations and len(stats.history) == smoke.iterations


def test_different_seed_gives_different_training(smoke, css_tiny):
    losses = []
    for seed in (0, 1):
        model = _build("concat", smoke, css_tiny)
        losses.append(train(model, css_tiny, smoke, seed=seed).history)
    assert losses[0] != losses[1]


def test_interrupted_training_resumes_exactly(smoke, css_tiny, tmp_path):
    proto = dataclasses.replace(smoke, iterations=6)
    ckpt = tmp_path / "run.ckpt"
    full = _build("concat", proto, css_tiny)
    ref = train(full, css_tiny, proto, seed=3)

    part = _build("concat", proto, css_tiny)
    train(part, css_tiny, proto, seed=3, checkpoint=ckpt, stop_after=4)
    assert ckpt.exists()
    resumed = _build("concat", proto, css_tiny)  # a fresh process would rebuild the model too
    torch.manual_seed(12345)  # whatever the RNG state, the checkpoint restores it
    stats = train(resumed, css_tiny, proto, seed=3, checkpoint=ckpt)
    assert stats.resumed_from == 4
    assert stats.history == ref.history
    for (n, a), (_, b) in zip(full.state_dict().items(), resumed.state_dict().items()):
        assert torch.equal(a, b), n


def test_generator_states_survive_a_weights_only_checkpoint():
    from cirbench.train import _restore_rng_state, _rng_state

    seed_everything(5)
    rng = np.random.default_rng(5)
    rng.random(3), np.random.rand(7), random.random(), torch.rand(2)
    buf = io.BytesIO()
    torch.save(_rng_state(rng), buf)
    expected = (random.random(), np.random.rand(4).tolist(), rng.random(4).tolist(), torch.rand(4))
    seed_everything(99)
    rng = np.random.default_rng(99)
    _restore_rng_state(rng, torch.load(io.BytesIO(buf.getvalue()), weights_only=True))
    got = (random.random(), np.random.rand(4).tolist(), rng.random(4).tolist(), torch.rand(4))
    assert got[:3] == expected[:3] and torch.equal(got[3], expected[3])


class _TouchOnLoad:
    """Unpickling this object creates a file: what a malicious checkpoint could do."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (pathlib.Path.touch, (self.path,))


def test_a_checkpoint_holding_an_arbitrary_object_is_refused(smoke, css_tiny, tmp_path):
    ckpt = tmp_path / "run.ckpt"
    proto = dataclasses.replace(smoke, iterations=3)
    train(_build("concat", proto, css_tiny), css_tiny, proto, seed=0, checkpoint=ckpt, stop_after=1)
    state = torch.load(ckpt, weights_only=True)  # what train writes loads safely
    marker = tmp_path / "pwned"
    state["history"].append(_TouchOnLoad(marker))
    torch.save(state, ckpt)
    with pytest.raises(CheckpointError, match=f"checkpoint {ckpt} cannot be loaded safely") as err:
        train(_build("concat", proto, css_tiny), css_tiny, proto, seed=0, checkpoint=ckpt)
    assert "--force" in str(err.value) and not marker.exists()
    ckpt.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match=str(ckpt)):
        train(_build("concat", proto, css_tiny), css_tiny, proto, seed=0, checkpoint=ckpt)
    torch.save({"step": 1}, ckpt)
    with pytest.raises(CheckpointError, match="not a cirbench training checkpoint .missing elapsed, model"):
        train(_build("concat", proto, css_tiny), css_tiny, proto, seed=0, checkpoint=ckpt)


def test_non_finite_loss_raises_diverged(smoke, css_tiny, pixel_mean_cls):
    class Exploding(pixel_mean_cls):
        def training_loss(self, batch):
            return {"base": super().training_loss(batch)["base"] * float("inf")}

    model = Exploding(ComposerContext(smoke, css_tiny.train_texts()))
    with pytest.raises(DivergedError, match="step 0"):
        train(model, css_tiny, smoke, seed=0)
