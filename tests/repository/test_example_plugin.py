"""The example plugin package, examples/cirbench-mymethod, as a plugin author would use it.

The test environment installs the package (tox.ini's ``commands_pre`` of ``tests``: ``pip
install --target``, a folder of its own named by ``$CIRBENCH_EXAMPLE_PLUGIN_PATH``); then ``cirbench list`` shows it with its distribution, ``cirbench check mymethod`` passes and
``cirbench run`` trains and evaluates it on ``smoke``. In a developer's environment without it
these tests install nothing and skip, saying how to install it; under CI (``CI`` set) a missing
install is a failure, so the suite cannot pass there without running them.

The static tests (the package's entry point and imports) run everywhere.
"""

from __future__ import annotations

import ast
import importlib.metadata as md
import json
import math
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import cirbench

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "cirbench-mymethod"
INSTALL = "pip install -e examples/cirbench-mymethod (tox -e tests installs it)"


def _ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


@pytest.fixture(scope="module")
def example_installed() -> str:
    """Where the installed example is: the folder tox installed it into
    (``$CIRBENCH_EXAMPLE_PLUGIN_PATH``, put on the commands' path), or "" when it is installed
    in this environment. Skips (fails under CI) when it is installed in neither."""
    target = os.environ.get("CIRBENCH_EXAMPLE_PLUGIN_PATH", "")
    for dist in md.distributions(path=[target] if target else sys.path):
        if dist.name == "cirbench-mymethod" and any(
                (ep.group, ep.name, ep.value) == ("cirbench", "mymethod", "cirbench_mymethod") for ep in dist.entry_points):
            return target
    where = f"in {target}" if target else "here"
    reason = f"the example plugin cirbench-mymethod is not installed {where}: {INSTALL}"
    if _ci():
        pytest.fail(f"{reason}; under CI it must be")
    pytest.skip(reason)


def _cli(*args: str, cwd: Path, path: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "CI": "1", "CIRBENCH_CACHE": str(cwd / "cache")}
    if path:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (path, env.get("PYTHONPATH", "")) if p)
    return subprocess.run([sys.executable, "-m", "cirbench", *args], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=900)


# --- the package itself (no install needed) ----------------------------------------------------------
def test_example_package_registers_its_module_in_the_cirbench_group():
    meta = tomllib.loads((EXAMPLE / "pyproject.toml").read_text(encoding="utf-8"))
    assert meta["project"]["name"] == "cirbench-mymethod"
    assert "cirbench" in meta["project"]["dependencies"]
    assert meta["project"]["entry-points"]["cirbench"] == {"mymethod": "cirbench_mymethod"}
    assert (EXAMPLE / "cirbench_mymethod.py").is_file()


def test_example_module_uses_the_public_api_only():
    """Every cirbench name it imports or reads is exported by ``cirbench``."""
    tree = ast.parse((EXAMPLE / "cirbench_mymethod.py").read_text(encoding="utf-8"))
    used = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "cirbench":
            assert node.module == "cirbench", f"line {node.lineno}: imports from {node.module}"
            used |= {a.name for a in node.names}
        elif isinstance(node, ast.Import):
            assert all(a.name == "cirbench" or not a.name.startswith("cirbench.") for a in node.names)
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "cirbench":
            used.add(node.attr)
    assert used and used <= set(cirbench.__all__), sorted(used - set(cirbench.__all__))


def test_readme_points_at_the_example_package():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "examples/cirbench-mymethod" in readme


# --- installed: the commands a plugin author runs ----------------------------------------------------
def test_example_is_listed_with_its_distribution(example_installed, tmp_path):
    out = _cli("list", cwd=tmp_path, path=example_installed)
    assert out.returncode == 0, out.stderr
    (line,) = [ln for ln in out.stdout.splitlines() if ln.startswith("mymethod ")]
    assert "distribution cirbench-mymethod 0.1.0" in line


def test_cirbench_check_passes_on_the_example(example_installed, tmp_path):
    out = _cli("check", "mymethod", cwd=tmp_path, path=example_installed)
    assert out.returncode == 0, out.stdout + out.stderr
    rows = {ln.split()[2]: ln.split()[3] for ln in out.stdout.splitlines() if ln.startswith("composer  mymethod ")}
    # the checks every composer must pass on CPU (attention maps and CUDA may be skipped)
    for check in ("check_output_shapes", "check_seeded_determinism", "check_gradients", "check_loss_parts",
                  "check_state_dict_round_trip", "check_optimizers", "check_cpu"):
        assert rows.get(check) == "passed", (check, rows)
    assert "failed" not in rows.values()


def test_example_runs_on_smoke(example_installed, tmp_path):
    res = tmp_path / "res"
    out = _cli("run", "--composer", "mymethod", "--dataset", "css-synth", "--protocol", "smoke",
               "--results", str(res), cwd=tmp_path, path=example_installed)
    assert out.returncode == 0, out.stdout + out.stderr
    (file,) = res.rglob("seed0.json")
    assert file.relative_to(res).parts[1:] == ("css-synth", "mymethod", "seed0.json")
    result = json.loads(file.read_text())
    assert result["status"] == "ok", result.get("error")
    assert (result["composer"]["distribution"], result["composer"]["version"]) == ("cirbench-mymethod", "0.1.0")
    assert result["plugins"]["cirbench-mymethod"] == "0.1.0"
    # smoke trains 4 steps of the one named loss part, each recorded and finite
    history = result["train"]["history"]
    assert [h["step"] for h in history] == [1, 2, 3, 4]
    assert all(set(h) == {"step", "base"} and math.isfinite(h["base"]) for h in history)
    # more than the ResNet-18 trunk alone (11,176,512 weights), all trainable
    assert result["params"]["trainable"] == result["params"]["total"] > 11_176_512
    # overall recall is the query-weighted mean of the groups' recall, each a count of hits
    per_group = result["dataset"]["facts"]["queries_per_group"]
    n = sum(per_group.values())
    for k in ("R@1", "R@5", "R@10"):
        hits = {g: result["metrics"]["groups"][g][k] * per_group[g] for g in per_group}
        assert all(abs(h - round(h)) < 1e-9 for h in hits.values())
        assert result["metrics"]["overall"][k] == pytest.approx(sum(hits.values()) / n, abs=1e-12)
