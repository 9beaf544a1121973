"""The public API (``cirbench.__all__``) and the contract's index (cirbench/hookspecs.py):
every exported name resolves, helpers load on first use, and the reference plugins and the
README's example import nothing but exported names."""

from __future__ import annotations

import ast
import importlib
import re
import subprocess
import sys
from pathlib import Path

import pytest

import cirbench
from cirbench import hookspecs

ROOT = Path(__file__).resolve().parents[1]


def test_every_exported_name_resolves():
    for name in cirbench.__all__:
        assert getattr(cirbench, name) is not None, name
    assert len(cirbench.__all__) == len(set(cirbench.__all__))
    assert set(cirbench.__all__) <= set(dir(cirbench))


def test_a_lazy_name_is_the_defining_modules_object():
    from cirbench import ImageEncoder, load_or_generate
    from cirbench.data.cache import load_or_generate as defined

    assert ImageEncoder is importlib.import_module("cirbench.encoders").ImageEncoder
    assert load_or_generate is defined


def test_an_unknown_name_raises_attribute_error():
    with pytest.raises(AttributeError, match="module 'cirbench' has no attribute 'NoSuchThing'"):
        cirbench.NoSuchThing  # noqa: B018
    with pytest.raises(ImportError):
        exec("from cirbench import NoSuchThing", {})


def test_importing_cirbench_leaves_the_helpers_unloaded():
    """``import cirbench`` loads the contract only: the encoders (torchvision, transformers),
    export and attention load on first use."""
    code = (
        "import sys, cirbench\n"
        "heavy = ('cirbench.encoders', 'torchvision', 'transformers', 'cirbench.export', 'cirbench.attention')\n"
        "print(sorted(m for m in heavy if m in sys.modules))\n"
        "cirbench.ImageEncoder\n"
        "print('cirbench.encoders' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[:2] == ["[]", "True"]


def _cirbench_names(tree: ast.AST, where: str) -> set[str]:
    """The cirbench names a module imports or reads (``cirbench.X``); fails on an import from a
    submodule of cirbench."""
    used: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").split(".")[0] == "cirbench":
            assert node.module == "cirbench", f"{where}:{node.lineno}: imports from {node.module}, not from cirbench"
            used |= {a.name for a in node.names}
        elif isinstance(node, ast.Import):
            bad = [a.name for a in node.names if a.name.startswith("cirbench.")]
            assert not bad, f"{where}:{node.lineno}: imports {bad}"
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "cirbench":
            used.add(node.attr)
    return used


def _plugin_files() -> list[Path]:
    return sorted((ROOT / "plugins").rglob("*.py")) + sorted((ROOT / "examples").rglob("*.py"))


@pytest.mark.parametrize("path", _plugin_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_plugins_use_exported_names_only(path):
    used = _cirbench_names(ast.parse(path.read_text(encoding="utf-8")), str(path.relative_to(ROOT)))
    assert used <= set(cirbench.__all__), sorted(used - set(cirbench.__all__))


def test_readme_examples_use_exported_names_only():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert blocks
    used: set[str] = set()
    for i, block in enumerate(blocks):
        tree = ast.parse(block)
        # cirbench.testing is the conformance suite's own public package
        tree.body = [n for n in tree.body if not (isinstance(n, ast.ImportFrom) and n.module == "cirbench.testing")]
        used |= _cirbench_names(tree, f"README.md python block {i + 1}")
    assert {"Composer", "ComposerContext", "ComposerSpec", "hookimpl", "ImageEncoder"} <= used
    assert used <= set(cirbench.__all__), sorted(used - set(cirbench.__all__))


def test_the_contract_index_names_every_export_and_where_it_is():
    """hookspecs.py opens with the index: every exported name in it, every module it cites
    importable and defining the names listed under it."""
    index = hookspecs.__doc__
    named = set(re.findall(r"``@?(?:cirbench\.)?([A-Za-z_][A-Za-z0-9_]*)", index))
    missing = [n for n in cirbench.__all__ if n != "__version__" and n not in named]
    assert not missing, f"cirbench/hookspecs.py's index does not name {missing}"
    for hook in ("cirbench_composers", "cirbench_datasets", "cirbench_protocols"):
        assert f":func:`{hook}`" in index
    # "... (``cirbench.module``): ..." says where the names after it are defined, up to the
    # next such mention
    module, checked = None, 0
    for line in index.splitlines():
        m = re.search(r"\(``(cirbench(?:\.[a-z_]+)+)``\)", line)
        if m:
            module, line = m.group(1), line[m.end():]
        for name in re.findall(r"``([A-Za-z_][A-Za-z0-9_]*)", line):
            if module and name in cirbench.__all__ and name != "__version__":
                home = getattr(getattr(cirbench, name), "__module__", "")
                assert home.startswith(module) and hasattr(importlib.import_module(module), name), (name, module, home)
                checked += 1
    assert checked >= len(cirbench.__all__) - 2  # all but hookimpl and __version__
