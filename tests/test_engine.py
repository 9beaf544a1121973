"""The training and evaluation engine on the smoke protocol: determinism, resume,
divergence, evaluation rules end to end."""

from __future__ import annotations

import dataclasses
import io
import pathlib
import random

import numpy as np
import pytest
import torch

from cirbench import CIRDataset, Composer, ComposerContext, Query, Triplet
from cirbench.metrics import NO_HIT
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


class _Toy(CIRDataset):
    """Five flat images: every pixel of image i is 40 * i."""

    name = "toy"

    def __init__(self, queries):
        self._queries = queries

    @property
    def num_images(self):
        return 5

    def images(self, ids):
        return torch.tensor([40 * i for i in ids], dtype=torch.uint8).view(-1, 1, 1, 1).expand(-1, 3, 4, 4).clone()

    def train_triplets(self):
        return [Triplet(0, "a", 2)]

    def queries(self):
        return self._queries

    def gallery(self, group=None):
        return np.arange(5)


class _Oracle(Composer):
    """Decodes an image's id from its pixels; target = one-hot of the id; query = a vector
    given per text (weights over gallery ids)."""

    def __init__(self, query_vectors):
        super().__init__(ComposerContext(None, []))
        self.query_vectors = query_vectors
        self.dummy = torch.nn.Parameter(torch.zeros(1))

    def _ids(self, images):
        pixel = images[:, 0, 0, 0] * 0.229 + 0.485  # undo the ImageNet normalisation
        return (pixel * 255 / 40).round().long()

    def embed_target(self, images):
        return torch.eye(5)[self._ids(images)]

    def compose(self, images, texts):
        return torch.tensor([self.query_vectors[t] for t in texts], dtype=torch.float32)

    def training_loss(self, batch):
        return {"base": self.dummy.sum()}


def test_evaluation_rules_end_to_end():
    queries = [
        Query(0, "answer-2", (2,), "g1"),           # plain hit
        Query(1, "self-then-3-4", (1, 4), "g1"),    # its reference is a target but never counts
        Query(2, "tie-0-3", (3,), "g2"),            # tie between 0 and 3: earlier position first
        Query(0, "any-of-2-4", (2, 4), "g2"),       # any correct target counts
        Query(3, "no-target", (), "g2"),            # no correct target: never a hit
    ]
    vectors = {
        "answer-2": [0.5, 0, 1, 0, 0],
        "self-then-3-4": [0, 1, 0, 0.5, 0.25],
        "tie-0-3": [1, 0, 0, 1, 0],
        "any-of-2-4": [0, 0, 0.5, 0, 1],
        "no-target": [1, 1, 1, 1, 1],
    }
    ds = _Toy(queries)
    ev = evaluate(_Oracle(vectors), ds, ks=(1, 2, 5), batch_size=2, chunk=2)
    assert ev.ranks[:4] == [0, 1, 1, 0]
    assert ev.ranks[4] == NO_HIT
    assert ev.overall == {"R@1": 2 / 5, "R@2": 4 / 5, "R@5": 4 / 5}
    assert ev.groups["g1"] == {"R@1": 0.5, "R@2": 1.0, "R@5": 1.0}
    assert ev.groups["g2"] == pytest.approx({"R@1": 1 / 3, "R@2": 2 / 3, "R@5": 2 / 3})
    assert ev.gallery_size == 5 and ev.num_queries == 5


def test_evaluation_times_embedding_and_ranking_apart():
    queries = [Query(0, "answer-2", (2,), "g1"), Query(1, "tie-0-3", (3,), "g2")]
    vectors = {"answer-2": [0.5, 0, 1, 0, 0], "tie-0-3": [1, 0, 0, 1, 0]}
    ev = evaluate(_Oracle(vectors), _Toy(queries), ks=(1,), batch_size=2, chunk=2)
    # one shared gallery of 5 images (no group galleries) + the 2 queries' references
    assert ev.embedded_images == 5 + 2
    assert ev.embed_seconds > 0 and ev.rank_seconds > 0
    assert ev.embed_seconds + ev.rank_seconds <= ev.seconds
    assert ev.embed_images_per_second == pytest.approx(7 / ev.embed_seconds)
    assert ev.rank_queries_per_second == pytest.approx(2 / ev.rank_seconds)
