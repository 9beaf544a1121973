"""Data-parallel training (``torch.distributed``, gloo on CPU, two processes) against one
process with the same global batch.

Exactness: the composers here have a loss that is a mean of per-sample terms and no
BatchNorm, so the mean over two ranks of the gradients of their half-batches' losses is the
gradient of the global batch's loss: (1/2)·Σ_r (2/B)·Σ_{i∈r} g_i = (1/B)·Σ_i g_i. Only the
order of float32 sums differs, hence the tolerance: parameters within 1e-5 (absolute) after
the smoke budget, recorded losses within 1e-6 (relative). Losses with in-batch negatives and
BatchNorm see each rank's slice (stated in :mod:`cirbench.distributed`); the torchrun test
runs such a composer (image-only: soft triplet, a ResNet with BatchNorm) end to end.
"""

from __future__ import annotations

import dataclasses
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from cirbench import DatasetContext, distributed
from cirbench.composer import ComposerContext
from cirbench.evaluate import evaluate
from cirbench.results import ResultsStore
from cirbench.train import seed_everything, train

REPO = Path(__file__).resolve().parents[1]


def _composers():
    """Two composers without BatchNorm and with a per-sample loss: automatic optimisation,
    and manual optimisation with two optimisers stepped one after the other (as SAC does)."""
    from tests.fixtures.external_plugin import EXTERNAL_PLUGIN

    ns: dict = {}
    exec(compile(EXTERNAL_PLUGIN, "<pixel-mean plugin>", "exec"), ns)
    PixelMean = ns["PixelMean"]

    class PerSample(PixelMean):
        def training_loss(self, batch):
            self.seen = getattr(self, "seen", []) + [batch.reference_ids.tolist()]
            q = self.norm(self.compose(batch.reference_images, batch.texts))
            t = self.norm(self.embed_target(batch.target_images))
            return {"base": (q - t).pow(2).sum(1).mean()}

    class TwoOptimisers(PerSample):
        automatic_optimization = False

        def configure_optimizers(self):
            image = list(self.image.parameters())
            rest = [p for n, p in self.named_parameters() if not n.startswith("image.")]
            return [torch.optim.SGD(image, lr=0.05, momentum=0.9), torch.optim.Adam(rest, lr=0.01)]

        def training_step(self, batch, optimizers, step):
            loss = self.training_loss(batch)["base"]
            for opt in optimizers:
                opt.zero_grad(set_to_none=True)
            loss.backward()
            optimizers[0].step()
            optimizers[1].step()
            return {"base": loss.detach()}

    return {"per-sample": PerSample, "two-optimisers": TwoOptimisers}


def _protocol():
    from tests.fixtures.protocols import SMOKE

    return dataclasses.replace(SMOKE, name="smoke-ddp", embed_dim=16, iterations=6, batch_size=8)


def _dataset(cache: Path):
    from cirbench.plugins import load_registry

    return load_registry().dataset("css-synth").build(DatasetContext(_protocol(), cache))


def _run(name, ds, checkpoint=None, stop_after=None):
    protocol = _protocol()
    seed_everything(0)
    composer = _composers()[name](ComposerContext(protocol=protocol, train_texts=ds.train_texts(),
                                                  base_loss=ds.base_loss))
    stats = train(composer, ds, protocol, seed=0, checkpoint=checkpoint, checkpoint_every=2,
                  stop_after=stop_after, checkpoint_seconds=None)
    return composer, stats


def _outcome(composer, stats, ds):
    ev = evaluate(composer, ds, (1, 5, 10), batch_size=64)
    return {"seen": composer.seen,
            "state": {k: v.detach().clone() for k, v in composer.state_dict().items()},
            "history": stats.history, "metrics": ev.overall}


def _worker(rank: int, world: int, port: int, out: str, cache: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world)
    try:
        ds = _dataset(Path(cache))
        result = {}
        for name in ("per-sample", "two-optimisers"):
            composer, stats = _run(name, ds)
            slices = [None] * world  # the reference ids each rank trained on, per step
            torch.distributed.all_gather_object(slices, composer.seen)
            if rank == 0:
                result[name] = _outcome(composer, stats, ds)
                result[name]["slices"] = slices
        # resume under DDP: stop after 2 steps (rank 0 writes the checkpoint), then resume
        ckpt = Path(out).with_suffix(".ckpt")
        _run("per-sample", ds, checkpoint=ckpt, stop_after=2)
        distributed.barrier()
        assert ckpt.exists()
        composer, stats = _run("per-sample", ds, checkpoint=ckpt)
        assert stats.resumed_from == 2
        if rank == 0:
            result["resumed"] = _outcome(composer, stats, ds)
            torch.save(result, out)
        # every rank ends with the same parameters
        flat = torch.cat([p.detach().flatten() for p in composer.parameters()])
        gathered = [torch.zeros_like(flat) for _ in range(world)]
        torch.distributed.all_gather(gathered, flat)
        assert torch.equal(gathered[0], gathered[1])
    finally:
        torch.distributed.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ddp_and_single(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ddp")
    cache = tmp / "cache"
    ds = _dataset(cache)  # built once here; the workers load it from the cache
    out = tmp / "ddp.pt"
    mp.spawn(_worker, args=(2, _free_port(), str(out), str(cache)), nprocs=2, join=True)
    single = {name: _outcome(*_run(name, ds), ds) for name in ("per-sample", "two-optimisers")}
    return torch.load(out, weights_only=False), single


@pytest.mark.parametrize("name", ["per-sample", "two-optimisers"])
def test_two_ranks_train_the_model_of_one_process_with_the_same_global_batch(ddp_and_single, name):
    ddp, single = ddp_and_single
    a, b = ddp[name], single[name]
    assert a["state"].keys() == b["state"].keys()
    for k in a["state"]:
        torch.testing.assert_close(a["state"][k], b["state"][k], rtol=0, atol=1e-5, msg=k)
    assert len(a["history"]) == len(b["history"]) == 6
    for ha, hb in zip(a["history"], b["history"]):
        assert ha["step"] == hb["step"]
        assert ha["base"] == pytest.approx(hb["base"], rel=1e-6)
    assert a["metrics"] == b["metrics"]
    # each rank trained on its half of the one-process run's global batch, in rank order
    per_rank = a["slices"]
    assert [len(ids) for rank in per_rank for ids in rank] == [4] * 12
    assert [r0 + r1 for r0, r1 in zip(*per_rank)] == b["seen"]
    # and training did something: the parameters moved from their initialisation
    seed_everything(0)
    init = _composers()[name](ComposerContext(protocol=_protocol(), train_texts=["x"])).state_dict()
    assert not torch.allclose(a["state"]["image.weight"], init["image.weight"])


def test_a_ddp_run_resumes_from_rank_0s_checkpoint_exactly(ddp_and_single):
    ddp, _ = ddp_and_single
    for k, v in ddp["per-sample"]["state"].items():
        assert torch.equal(ddp["resumed"]["state"][k], v), k
    assert ddp["resumed"]["history"] == ddp["per-sample"]["history"]


def test_each_rank_takes_its_slice_of_the_global_batch(monkeypatch):
    items = list(range(6))
    assert distributed.shard(items) == items  # no process group: the whole batch
    monkeypatch.setattr(distributed, "world_size", lambda: 3)
    monkeypatch.setattr(distributed, "rank", lambda: 1)
    assert distributed.shard(items) == [2, 3]  # 6 / 3 = 2 per rank; rank 1: items 2..3
    with pytest.raises(ValueError, match="batch_size 8 is not divisible by the number of processes 3"):
        distributed.shard(list(range(8)))


def test_torchrun_runs_a_cell_with_two_processes_and_rank_0_writes_it(tmp_path):
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{REPO / 'plugins'}",
           "CIRBENCH_CACHE": str(tmp_path / "cache"), "XDG_CACHE_HOME": str(tmp_path / "xdg"),
           "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
           "--master-port", str(_free_port()), "-m", "cirbench", "run", "--protocol", "smoke",
           "--dataset", "css-synth", "--composer", "image-only", "--device", "cpu", "--threads", "1",
           "--results", str(tmp_path / "r")]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert len(re.findall(r"^\[1/1\] image-only on css-synth", proc.stdout, re.M)) == 1  # rank 0 prints
    (result,) = list(ResultsStore(tmp_path / "r"))
    assert result.status == "ok" and result.train.iterations == 4
    assert not list((tmp_path / "r").rglob("*.claim")) and not list((tmp_path / "r").rglob("*.ckpt"))
