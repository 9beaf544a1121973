"""The one training step (cirbench.train.train_step), shared by the engine's loop and the
conformance suite."""

from __future__ import annotations

import pytest
import torch

from cirbench import Composer, ComposerContext, TrainBatch
from cirbench.testing.base import CheckFailed
from cirbench.testing import composer_checks
from cirbench.train import DivergedError, train_step


class _Line(Composer):
    """One parameter w (start 1.0); loss parts {"a": w, "b": 2 w} (or what ``parts`` gives)."""

    def __init__(self, parts=None):
        super().__init__(ComposerContext(None, []))
        self.w = torch.nn.Parameter(torch.ones(()))
        self.parts = parts
        self.started: list[int] = []

    def compose(self, images, texts):
        return images.flatten(1)[:, :2] * self.w

    def embed_target(self, images):
        return images.flatten(1)[:, :2]

    def training_loss(self, batch):
        if self.parts is not None:
            return self.parts(self.w)
        return {"a": self.w * 1.0, "b": self.w * 2.0}

    def configure_optimizers(self):
        return [torch.optim.SGD([self.w], lr=0.1)]

    def on_train_step_start(self, step):
        self.started.append(step)


def _batch():
    x = torch.zeros(2, 3, 2, 2)
    return TrainBatch(x, ["t", "u"], x, torch.tensor([0, 1]), torch.tensor([1, 0]))


def test_automatic_step_updates_steps_schedulers_and_returns_floats():
    model = _Line()
    opts = model.configure_optimizers()
    sched = [torch.optim.lr_scheduler.StepLR(opts[0], step_size=1, gamma=0.5)]
    parts = train_step(model, _batch(), opts, sched, step=7)
    # loss = w + 2w = 3w, d/dw = 3; SGD lr 0.1: w = 1 - 0.1 * 3 = 0.7; the scheduler halves lr.
    assert parts == {"a": 1.0, "b": 2.0}
    assert all(type(v) is float for v in parts.values())
    assert model.w.item() == pytest.approx(0.7)
    assert opts[0].param_groups[0]["lr"] == pytest.approx(0.05)
    assert model.started == [7]


def test_gradients_do_not_accumulate_across_steps():
    model = _Line()
    opts = model.configure_optimizers()
    train_step(model, _batch(), opts, step=0)
    train_step(model, _batch(), opts, step=1)
    # each step subtracts 0.1 * 3 (zero_grad before backward): 1 - 0.3 - 0.3 = 0.4
    assert model.w.item() == pytest.approx(0.4)


def test_non_finite_loss_diverges_before_any_parameter_changes():
    model = _Line(parts=lambda w: {"a": w * float("nan")})
    opts = model.configure_optimizers()
    with pytest.raises(DivergedError, match="step 3"):
        train_step(model, _batch(), opts, step=3)
    assert model.w.item() == 1.0
    assert model.w.grad is None


def test_a_part_that_is_not_a_scalar_is_named():
    model = _Line(parts=lambda w: {"vec": w * torch.ones(3)})
    with pytest.raises(TypeError, match="loss part 'vec' has shape \\(3,\\)"):
        train_step(model, _batch(), model.configure_optimizers())


def test_a_part_on_another_device_is_named():
    model = _Line(parts=lambda w: {"a": w * 1.0, "elsewhere": torch.zeros((), device="meta")})
    with pytest.raises(ValueError, match="loss part 'elsewhere' is on meta"):
        train_step(model, _batch(), model.configure_optimizers())
    assert model.w.item() == 1.0


def test_manual_optimisation_runs_the_composers_step():
    class Manual(_Line):
        automatic_optimization = False

        def training_step(self, batch, optimizers, step):
            optimizers[0].zero_grad()
            (self.w * 5).backward()
            optimizers[0].step()
            return {"five": 5.0, "t": torch.tensor(0.5)}

    model = Manual()
    parts = train_step(model, _batch(), model.configure_optimizers(), step=2)
    assert parts == {"five": 5.0, "t": 0.5}
    assert model.w.item() == pytest.approx(1 - 0.1 * 5)  # d(5w)/dw = 5


def test_the_conformance_suite_takes_the_engines_step(monkeypatch):
    seen = []
    real = composer_checks.train_step

    def spy(*args, **kwargs):
        seen.append(args[0])
        return real(*args, **kwargs)

    monkeypatch.setattr(composer_checks, "train_step", spy)
    model = _Line()
    assert composer_checks._train_step(model, _batch()) == {"a": 1.0, "b": 2.0}
    assert seen == [model] and model.training

    bad = _Line(parts=lambda w: {"a": w * float("inf")})
    with pytest.raises(CheckFailed, match="non-finite loss at step 0"):
        composer_checks._train_step(bad, _batch())
