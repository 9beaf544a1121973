"""The training input pipeline (cirbench.pipeline), precision and compile: the batches and
losses are those of the plain main-thread path (make_batch), bit for bit."""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import pytest
import torch

from cirbench import CIRDataset, ComposerContext, DatasetContext, Triplet
from cirbench import pipeline
from cirbench.pipeline import TrainInput, table_fits
from cirbench.plugins import load_registry
from cirbench.results import TrainStats
from cirbench.train import compile_composer, make_batch, seed_everything, train, train_step
from tests.fixtures.protocols import SMOKE


def _same_batch(a, b) -> None:
    for f in ("reference_images", "target_images", "reference_ids", "target_ids"):
        x, y = getattr(a, f), getattr(b, f)
        assert x.dtype == y.dtype and x.shape == y.shape and torch.equal(x, y), f
    assert a.texts == b.texts


def _check_against_make_batch(dataset, batch_size, steps, **kwargs) -> str:
    """Draw ``steps`` batches as the loop does; every TrainInput batch equals make_batch's."""
    rng = np.random.default_rng(5)
    size = int(dataset.images([0]).shape[-1])
    with TrainInput(dataset, "cpu", size, rng, batch_size, steps, **kwargs) as source:
        for _ in range(steps):
            triplets = dataset.sample_triplets(rng, batch_size)
            _same_batch(source.batch(triplets), make_batch(dataset, triplets, "cpu"))
        return source.mode


class _Files(CIRDataset):
    """A dataset read 'from files': 40 images, pixel values from the id; images() may sleep
    an amount that depends on the ids, so that workers finish out of order."""

    name = "files"

    def __init__(self, sleepy=False):
        self.sleepy = sleepy

    @property
    def num_images(self):
        return 40

    def images(self, ids):
        ids = [int(i) for i in ids]
        if self.sleepy:
            time.sleep(0.002 * (sum(ids) % 7))
        base = torch.arange(3 * 8 * 8, dtype=torch.int64).view(1, 3, 8, 8)
        return ((base + 37 * torch.tensor(ids).view(-1, 1, 1, 1)) % 256).to(torch.uint8)

    def train_triplets(self):
        return [Triplet(i, f"t{i % 3}", (i * 7 + 1) % 40) for i in range(40)]

    def queries(self):
        return []

    def gallery(self, group=None):
        return np.arange(40)


@pytest.fixture(scope="module")
def css32(tmp_path_factory):
    """css-synth at 32 px: its images() resizes the 64 px canvas (the table is resized once)."""
    proto = dataclasses.replace(SMOKE, image_size=32)
    return load_registry().dataset("css-synth").build(DatasetContext(proto, tmp_path_factory.mktemp("css32")))


def test_device_table_batches_are_make_batch_batches(css_tiny, css32):
    assert css_tiny.images_in_memory and table_fits(css_tiny, 64, torch.device("cpu"))
    assert _check_against_make_batch(css_tiny, 8, 5) == "device-table"
    assert _check_against_make_batch(css32, 8, 5) == "device-table"


@pytest.mark.parametrize("workers", [0, 2])
def test_loader_batches_are_make_batch_batches_in_the_runs_order(workers):
    ds = _Files(sleepy=True)
    assert not table_fits(ds, 8, torch.device("cpu"))  # not in memory: the loader
    assert _check_against_make_batch(ds, 6, 8, workers=workers) == "loader"


def test_loader_with_workers_on_an_in_memory_dataset(css_tiny):
    assert _check_against_make_batch(css_tiny, 8, 4, workers=2, table=False) == "loader"


def test_the_table_is_only_for_in_memory_datasets_within_the_limit(css_tiny, monkeypatch):
    assert not table_fits(_Files(), 8, torch.device("cpu"))
    need = css_tiny.num_images * 3 * 64 * 64
    monkeypatch.setattr(pipeline, "DEVICE_TABLE_BYTES", need)
    assert table_fits(css_tiny, 64, torch.device("cpu"))
    monkeypatch.setattr(pipeline, "DEVICE_TABLE_BYTES", need - 1)
    assert not table_fits(css_tiny, 64, torch.device("cpu"))


def test_a_loader_out_of_step_with_the_loop_is_an_error():
    ds = _Files()
    rng = np.random.default_rng(0)
    with TrainInput(ds, "cpu", 8, rng, 4, 2) as source:
        other = ds.sample_triplets(np.random.default_rng(1), 4)
        with pytest.raises(RuntimeError, match="out of step"):
            source.batch(other)
    with pytest.raises(ValueError, match="workers must be >= 0"):
        TrainInput(ds, "cpu", 8, rng, 4, 2, workers=-1)


def test_channels_last_changes_the_layout_not_the_values(css_tiny):
    rng = np.random.default_rng(0)
    triplets = css_tiny.sample_triplets(np.random.default_rng(0), 4)
    with TrainInput(css_tiny, "cpu", 64, rng, 4, 1, channels_last=True) as source:
        b = source.batch(triplets)
    assert b.reference_images.is_contiguous(memory_format=torch.channels_last)
    _same_batch(b, make_batch(css_tiny, triplets, "cpu"))


def _old_loop_losses(name, proto, dataset, seed=0) -> list[dict]:
    """Training as the loop did before the pipeline: make_batch on the main thread."""
    seed_everything(seed)
    comp = _build(name, proto, dataset)
    rng = np.random.default_rng(seed)
    opts = comp.configure_optimizers()
    comp.train()
    out = []
    for step in range(proto.iterations):
        batch = make_batch(dataset, dataset.sample_triplets(rng, proto.batch_size), "cpu")
        out.append(train_step(comp, batch, opts, (), step))
    return out


def _build(name, proto, dataset):
    ctx = ComposerContext(proto, dataset.train_texts(), base_loss=dataset.base_loss, device="cpu")
    return load_registry().composer(name).build(ctx)


def _train(name, proto, dataset, **kwargs) -> TrainStats:
    seed_everything(0)
    return train(_build(name, proto, dataset), dataset, proto, 0, **kwargs)


@pytest.mark.parametrize("name", ["tirg", "sac"])
def test_losses_are_those_of_the_main_thread_path(name, smoke, css_tiny, monkeypatch):
    proto = dataclasses.replace(smoke, iterations=3)
    expected = _old_loop_losses(name, proto, css_tiny)  # history has a point per step (3 < 50)
    table = _train(name, proto, css_tiny)
    assert table.setup["input"] == "device-table"
    assert [{k: v for k, v in h.items() if k != "step"} for h in table.history] == expected
    monkeypatch.setattr(pipeline, "DEVICE_TABLE_BYTES", 0)  # as a dataset read from files
    for workers in (0, 2):
        loader = _train(name, proto, css_tiny, workers=workers)
        assert loader.setup["input"] == "loader" and loader.setup["workers"] == workers
        assert loader.history == table.history


def test_bf16_trains_on_cpu_with_other_numbers_and_another_hash(smoke, css_tiny):
    proto = dataclasses.replace(smoke, iterations=3)
    bf16 = dataclasses.replace(proto, precision="bf16")
    assert bf16.hash != proto.hash
    a, b = _train("tirg", proto, css_tiny), _train("tirg", bf16, css_tiny)
    assert b.setup["precision"] == "bf16" and a.setup["precision"] == "fp32"
    assert all(np.isfinite(v) for h in b.history for v in h.values())
    assert a.history != b.history
    # the same bf16 run again: identical (autocast is deterministic on the CPU)
    assert _train("tirg", bf16, css_tiny).history == b.history


def test_compile_keeps_parameter_names_and_numbers(smoke, css_tiny):
    """With the "eager" backend (no code generation) the compiled step computes exactly what
    the plain one does; the wiring is that of --compile (inductor)."""
    proto = dataclasses.replace(smoke, iterations=2)
    seed_everything(0)
    comp = _build("tirg", proto, css_tiny)
    keys = list(comp.state_dict())
    names = compile_composer(comp, backend="eager")
    assert names and list(comp.state_dict()) == keys
    compiled = train(comp, css_tiny, proto, 0)
    assert compiled.history == _train("tirg", proto, css_tiny).history


def test_setup_is_recorded_and_read_back(smoke, css_tiny):
    stats = _train("concat", dataclasses.replace(smoke, iterations=2), css_tiny)
    assert stats.setup["input"] == "device-table" and stats.setup["compiled"] == []
    assert stats.setup["channels_last"] is False and stats.setup["data_wait_seconds"] >= 0
    back = TrainStats.from_json(stats.to_json())
    assert back == stats
    old = {k: v for k, v in stats.to_json().items() if k != "setup"}  # a result from before
    assert TrainStats.from_json(old).setup == {}


def test_a_run_read_through_the_loader_resumes_exactly(smoke, css_tiny, monkeypatch, tmp_path):
    monkeypatch.setattr(pipeline, "DEVICE_TABLE_BYTES", 0)
    proto = dataclasses.replace(smoke, iterations=4)
    whole = _train("concat", proto, css_tiny, workers=2)
    ckpt = tmp_path / "ckpt.pt"
    _train("concat", proto, css_tiny, workers=2, checkpoint=ckpt, checkpoint_every=1, stop_after=2)
    seed_everything(0)  # the resumed process: generator states come from the checkpoint
    resumed = train(_build("concat", proto, css_tiny), css_tiny, proto, 0, checkpoint=ckpt, workers=2)
    assert resumed.resumed_from == 2 and resumed.setup["input"] == "loader"
    assert resumed.history == whole.history


def test_run_options_workers_and_compile_parse(capsys):
    from cirbench.cli import build_parser

    args = build_parser().parse_args(["run", "--workers", "3", "--compile"])
    assert args.workers == 3 and args.compile is True
    args = build_parser().parse_args(["run"])
    assert args.workers == 0 and args.compile is False
    with pytest.raises(SystemExit):
        build_parser().parse_args(["run", "--workers", "-1"])
    assert "--workers" in capsys.readouterr().err


def test_the_runner_passes_workers_and_the_result_records_the_setup(smoke, css_tiny, tmp_path, monkeypatch):
    import json

    from cirbench.results import RunKey
    from cirbench.runner import Runner, RunOptions

    monkeypatch.setattr(pipeline, "DEVICE_TABLE_BYTES", 0)  # as a dataset read from files
    runner = Runner(load_registry(), RunOptions(results=tmp_path / "r", cache_dir=tmp_path / "c",
                                                device=torch.device("cpu"), workers=2))
    runner._datasets[(smoke.hash, "css-synth")] = css_tiny
    key = RunKey(smoke, "css-synth", "concat", 0)
    assert runner.run_one(key).status == "ok"
    setup = json.loads(runner.store.path(key).read_text())["train"]["setup"]
    assert setup["input"] == "loader" and setup["workers"] == 2 and setup["precision"] == "fp32"
