"""Hooks and plugin discovery: built-ins, entry points, an external package, and the errors
for a plugin that fails to import, returns the wrong type or clashes with another."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from cirbench import DatasetSpec, hookimpl
from cirbench.plugins import PluginError, UnknownNameError, load_registry
from tests.fixtures.external_plugin import EXTERNAL_PLUGIN, install_fake_distribution


def test_reference_plugins_are_discovered_through_entry_points():
    reg = load_registry()
    assert {"image-only", "text-only", "concat"} <= set(reg.composers)
    assert "css-synth" in reg.datasets
    assert {"smoke", "quick", "full"} <= set(reg.protocols)
    prov = reg.provider("composer", "concat")
    assert prov.plugin == "baselines" and prov.distribution == "cirbench"
    assert reg.provider("protocol", "quick").plugin == "cirbench"


def test_external_plugin_package_is_discovered(external_plugin):
    reg = load_registry()
    assert "pixel-mean" in reg.composers
    prov = reg.provider("composer", "pixel-mean")
    assert (prov.distribution, prov.version) == ("cirbench-pixel-mean", "1.0")
    assert reg.distributions["cirbench-pixel-mean"] == "1.0"


def test_unknown_name_lists_valid_names():
    reg = load_registry()
    with pytest.raises(UnknownNameError) as err:
        reg.composer("tirgg")
    assert "tirgg" in str(err.value) and "concat" in str(err.value)


def test_plugin_that_fails_to_import_is_named(tmp_path, monkeypatch):
    root = install_fake_distribution(tmp_path, "broken-dist", "broken_mod", "import no_such_module_xyz\n")
    monkeypatch.syspath_prepend(str(root))
    with pytest.raises(PluginError) as err:
        load_registry()
    msg = str(err.value)
    assert "broken-dist" in msg and "failed to import" in msg and "no_such_module_xyz" in msg


def test_hook_returning_wrong_type_is_named(tmp_path, monkeypatch):
    src = "import cirbench\n@cirbench.hookimpl\ndef cirbench_composers():\n    return ['not a spec']\n"
    root = install_fake_distribution(tmp_path, "wrong-type-dist", "wrong_type_mod", src)
    monkeypatch.syspath_prepend(str(root))
    with pytest.raises(PluginError) as err:
        load_registry()
    msg = str(err.value)
    assert "wrong-type-dist" in msg and "cirbench_composers" in msg and "ComposerSpec" in msg


def test_hook_returning_non_list_is_named():
    class Plugin:
        @hookimpl
        def cirbench_datasets(self):
            return DatasetSpec("x", lambda ctx: None)

    with pytest.raises(PluginError, match="'bad-plugin'.*must return a list"):
        load_registry(extra_plugins=[("bad-plugin", Plugin())])


def test_name_clash_names_both_plugins(tmp_path, monkeypatch):
    src = (
        "import cirbench\n@cirbench.hookimpl\ndef cirbench_composers():\n"
        "    return [cirbench.ComposerSpec('concat', object)]\n"
    )
    root = install_fake_distribution(tmp_path, "clash-dist", "clash_mod", src)
    monkeypatch.syspath_prepend(str(root))
    with pytest.raises(PluginError) as err:
        load_registry()
    msg = str(err.value)
    assert "'concat'" in msg and "baselines" in msg and "clash-dist" in msg


def test_entry_point_name_clash(tmp_path, monkeypatch):
    root = install_fake_distribution(tmp_path, "dupe-dist", "dupe_mod", "", entry_name="baselines")
    monkeypatch.syspath_prepend(str(root))
    with pytest.raises(PluginError, match="two plugins are named 'baselines'"):
        load_registry()


def test_hookspecs_have_docstrings():
    from cirbench import hookspecs

    for name in ("cirbench_datasets", "cirbench_composers", "cirbench_protocols"):
        doc = getattr(hookspecs, name).__doc__
        assert doc and "Return" in doc, name


def _cli(args, env_extra, cwd):
    env = {**os.environ, **env_extra, "CI": "1"}
    return subprocess.run([sys.executable, "-m", "cirbench.cli", *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=600)


def test_external_plugin_listed_and_run_from_the_command_line(external_plugin, tmp_path):
    path = os.pathsep.join(p for p in (str(external_plugin), os.environ.get("PYTHONPATH", "")) if p)
    env = {"PYTHONPATH": path, "CIRBENCH_CACHE": str(tmp_path / "cache")}
    out = _cli(["list"], env, tmp_path)
    assert out.returncode == 0, out.stderr
    assert "pixel-mean" in out.stdout and "cirbench-pixel-mean" in out.stdout
    out = _cli(["run", "--composer", "pixel-mean", "--dataset", "css-synth", "--protocol", "smoke",
                "--results", str(tmp_path / "res")], env, tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    import json

    result = json.loads(next((tmp_path / "res").rglob("seed0.json")).read_text())
    assert result["status"] == "ok"
    assert result["composer"]["distribution"] == "cirbench-pixel-mean"
    assert result["plugins"]["cirbench-pixel-mean"] == "1.0"
    # the metrics are the Recall@K of the ranks the run stored beside its result, counted here
    # by hand: R@K = (number of queries whose first correct target is at rank < K) / queries
    from cirbench.protocol import BUILTIN_PROTOCOLS
    from cirbench.results import ResultsStore

    smoke = next(p for p in BUILTIN_PROTOCOLS if p.name == "smoke")
    (stored,) = list(ResultsStore(tmp_path / "res"))
    ranks = ResultsStore(tmp_path / "res").load_ranks(stored).ranks.tolist()
    assert len(ranks) == result["eval"]["num_queries"] > 0
    assert result["metrics"]["overall"] == {
        f"R@{k}": pytest.approx(sum(r < k for r in ranks) / len(ranks), abs=1e-12) for k in smoke.ks}
