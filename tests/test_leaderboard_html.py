"""Issue 13: the leaderboard from real runs with stored per-query ranks: intervals, rank groups,
composition gain, per-group tables, the tidy results.csv and the self-contained index.html."""

from __future__ import annotations

import dataclasses
import re

import pandas as pd
import pytest
import torch

from cirbench import ComposerSpec, hookimpl
from cirbench.leaderboard import write_leaderboard
from cirbench.plugins import load_registry
from cirbench.results import ResultsStore
from cirbench.runner import Runner, RunOptions

EVIL = 'make it <script>alert("x")</script><img src=x onerror="alert(1)"> & red'
COMPOSERS = ["pixels-only", "words-only", "pixel-mean"]
BASELINES = ("pixels-only", "words-only")  # fast stand-ins for the baselines plugin's, via the option
SEEDS = [0, 1]


class EvilCaptions:
    """css_tiny with the first test query's text replaced by markup (as a dataset could hold)."""

    def __init__(self, ds):
        self._ds = ds

    def __getattr__(self, name):
        return getattr(self._ds, name)

    def queries(self):
        qs = list(self._ds.queries())
        return [dataclasses.replace(qs[0], text=EVIL)] + qs[1:]


@pytest.fixture(scope="module")
def board(tmp_path_factory, pixel_mean_cls, css_tiny):
    from tests.fixtures.protocols import SMOKE

    class PixelsOnly(pixel_mean_cls):
        def compose(self, images, texts):
            return self._pixels(images)

    class WordsOnly(pixel_mean_cls):
        def compose(self, images, texts):
            return super().compose(images, texts) - self._pixels(images)

    class TestPlugin:
        @hookimpl
        def cirbench_composers(self):
            return [ComposerSpec("pixel-mean", pixel_mean_cls), ComposerSpec("pixels-only", PixelsOnly),
                    ComposerSpec("words-only", WordsOnly)]

    tmp = tmp_path_factory.mktemp("board")
    reg = load_registry(extra_plugins=[("test-plugin", TestPlugin())])
    runner = Runner(reg, RunOptions(results=tmp / "results", cache_dir=tmp / "cache", device=torch.device("cpu")))
    runner._datasets[(SMOKE.hash, "css-synth")] = css_tiny
    runner.run_grid(SMOKE, ["css-synth"], COMPOSERS, SEEDS)
    store = ResultsStore(tmp / "results")
    out = tmp / "lb"
    write_leaderboard(store, out, baselines=BASELINES, dataset_loader=lambda p, h, d: EvilCaptions(css_tiny))
    return store, out, SMOKE


def test_tidy_csv_holds_every_result(board):
    store, out, smoke = board
    df = pd.read_csv(out / "results.csv")
    assert list(df.columns) == ["protocol", "hash", "dataset", "composer", "seed", "status", "group", "metric", "value"]
    for r in store:
        mine = df[(df.composer == r.composer.name) & (df.seed == r.seed)]
        assert set(mine.protocol) == {"smoke"} and set(mine.hash) == {smoke.hash}
        overall = mine[mine.group == "all"].set_index("metric")["value"]
        for k, v in r.metrics.overall.items():
            assert overall[k] == pytest.approx(v)
        for g, values in r.metrics.groups.items():
            got = mine[mine.group == g].set_index("metric")["value"]
            assert {k: got[k] for k in values} == pytest.approx(values)
        assert overall["params_total"] == r.params.total
    assert set(df.group) == {"all", "add", "remove", "change"}


def test_markdown_shows_intervals_rank_groups_gain_and_groups(board):
    store, out, smoke = board
    md = (out / f"smoke-{smoke.hash}--css-synth.md").read_text()
    assert "2000 resamples" in md and "paired bootstrap" in md
    header = next(line for line in md.splitlines() if line.lstrip("| ").startswith("rank"))
    for col in ("R@1 95% CI", "gain R@1", "eval queries/s", "peak memory", "device", "pretrained weights"):
        assert col in header
    table = [line for line in md.splitlines() if line.startswith("| ") and "|--" not in line][1:4]
    assert len(table) == 3 and all(re.search(r"\[\d+\.\d, \d+\.\d\]", line) for line in table)
    assert re.search(r"\| +1=? +\|", table[0])  # the best row leads group 1
    # the gain of pixel-mean: its R@1 minus the better baseline's on the same queries 
    csv = pd.read_csv(out / f"smoke-{smoke.hash}--css-synth.csv")
    s = csv.set_index("composer")
    best = max(BASELINES, key=lambda b: s.loc[b, "R@1 mean"])
    assert s.loc["pixel-mean", "gain vs"] == best
    assert s.loc["pixel-mean", "gain"] == pytest.approx(s.loc["pixel-mean", "R@1 mean"] - s.loc[best, "R@1 mean"])
    assert s.loc["pixel-mean", "gain low"] <= s.loc["pixel-mean", "gain"] <= s.loc["pixel-mean", "gain high"]
    assert pd.isna(s.loc["pixels-only", "gain"]) and pd.isna(s.loc["words-only", "gain"])
    assert "Recall@K per query group" in md and "add R@1" in md and "remove R@1" in md
    assert {"R@1 low", "R@1 high", "rank group", "gain"} <= set(csv.columns)
    assert (csv["R@1 low"] <= csv["R@1 mean"] + 1e-12).all() and (csv["R@1 mean"] <= csv["R@1 high"] + 1e-12).all()


def test_page_is_self_contained_and_escapes_dataset_text(board):
    store, out, smoke = board
    page = (out / "index.html").read_text()
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page)  # nothing from the network
    assert "<script>alert" not in page and "<img src=x" not in page
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;&lt;img src=x onerror=" in page
    assert page.count("<script>") == 1  # the page's own sorting script only
    assert page.count('class="hit"') >= 1 and "data:image/png;base64," in page
    assert "Retrieval examples" in page and "Per query group" in page


def test_old_results_without_ranks_show_no_interval(board, tmp_path):
    store, out, smoke = board
    old = [dataclasses.replace(r, ranks=None) for r in store]
    write_leaderboard(old, tmp_path, plots=False, html=True, baselines=BASELINES)
    md = (tmp_path / f"smoke-{smoke.hash}--css-synth.md").read_text()
    assert "No per-query ranks stored for" in md and "95% CI" not in md
    assert "no result of this table keeps its per-query ranks" in (tmp_path / "index.html").read_text()


def test_grid_images_are_shrunk_keeping_their_aspect():
    import io

    import numpy as np
    from PIL import Image

    from cirbench.leaderboard_html import image_png

    # 300 wide x 200 high -> at most 128 a side: 128 x round(200 * 128 / 300) = 128 x 85
    assert Image.open(io.BytesIO(image_png(np.zeros((3, 200, 300), np.uint8)))).size == (128, 85)
    assert Image.open(io.BytesIO(image_png(np.zeros((3, 32, 32), np.uint8)))).size == (32, 32)  # never enlarged
