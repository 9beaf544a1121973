"""An interrupted run resumes with the default options, on every protocol (issue 16).

Before: checkpoints every 500 steps by default, while ``quick`` has 200 and ``smoke`` 4, so an
interrupted default run started again from zero although README says it resumes.
"""

from __future__ import annotations

import json

import pytest
import torch

from cirbench import ComposerSpec, hookimpl
from cirbench.plugins import load_registry
from cirbench.protocol import BUILTIN_PROTOCOLS
from cirbench.results import RunKey
from cirbench.runner import Runner, RunOptions
from cirbench.train import checkpoint_interval


@pytest.mark.parametrize("protocol", BUILTIN_PROTOCOLS, ids=lambda p: p.name)
def test_default_checkpoints_fall_inside_every_builtin_protocol(protocol):
    every = checkpoint_interval(protocol.iterations)
    assert 1 <= every < protocol.iterations  # at least one checkpoint before the end
    assert protocol.iterations // every >= min(protocol.iterations - 1, 9)


def test_checkpoint_interval_by_hand():
    assert checkpoint_interval(4) == 1        # ceil(4 / 10)
    assert checkpoint_interval(200) == 20     # quick
    assert checkpoint_interval(160_000) == 16_000
    assert checkpoint_interval(200, every=7) == 7
    with pytest.raises(ValueError, match="checkpoint interval"):
        checkpoint_interval(200, every=0)


def _runner(registry, root, dataset, protocol):
    r = Runner(registry, RunOptions(results=root / "results", cache_dir=root / "cache",
                                    device=torch.device("cpu")))  # default checkpoint options
    r._datasets[(protocol.hash, "css-synth")] = dataset
    return r


def test_interrupted_smoke_run_resumes_past_step_0_with_identical_metrics(
        pixel_mean_cls, css_tiny, smoke, tmp_path, monkeypatch):
    class TestPlugin:
        @hookimpl
        def cirbench_composers(self):
            return [ComposerSpec("pixel-mean", pixel_mean_cls)]

    registry = load_registry(extra_plugins=[("test-plugin", TestPlugin())])
    key = RunKey(smoke, "css-synth", "pixel-mean", 0)

    whole = _runner(registry, tmp_path / "whole", css_tiny, smoke)
    whole.run_one(key)
    expected = json.loads(whole.store.path(key).read_text())
    assert expected["status"] == "ok" and expected["train"]["resumed_from"] == 0

    import cirbench.train as train_mod

    real_train_step = train_mod.train_step
    calls = {"n": 0}

    def ctrl_c_at_third_step(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt  # the user presses Ctrl-C during step 3 of 4
        return real_train_step(*args, **kwargs)

    cut = _runner(registry, tmp_path / "cut", css_tiny, smoke)
    monkeypatch.setattr(train_mod, "train_step", ctrl_c_at_third_step)
    with pytest.raises(KeyboardInterrupt):
        cut.run_one(key)
    assert cut.store.checkpoint_path(key).exists() and not cut.store.path(key).exists()
    monkeypatch.setattr(train_mod, "train_step", real_train_step)

    cut.run_one(key)  # the same command again
    resumed = json.loads(cut.store.path(key).read_text())
    assert resumed["status"] == "ok"
    assert resumed["train"]["resumed_from"] == 2  # checkpoints after steps 1 and 2 (every step of 4)
    assert resumed["metrics"] == expected["metrics"]
    assert resumed["train"]["final_loss"] == expected["train"]["final_loss"]
    assert not cut.store.checkpoint_path(key).exists()
