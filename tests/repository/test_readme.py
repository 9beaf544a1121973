"""README.md stays in step with what the package really provides."""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path

from cirbench.plugins import load_registry

README = Path(__file__).resolve().parents[2] / "README.md"


def _reference_plugin_rows() -> dict[str, set[str]]:
    """plugin name -> every backticked name in its 'provides' cell, from README's table."""
    text = README.read_text(encoding="utf-8")
    section = text.split("## Reference plugins", 1)[1].split("\n## ", 1)[0]
    rows: dict[str, set[str]] = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 3 or not cells[0].startswith("`"):
            continue
        rows[cells[0].strip("`")] = set(re.findall(r"`([^`]+)`", cells[1]))
    return rows


def test_reference_plugins_table_lists_every_plugin_and_what_it_provides():
    reg = load_registry()
    provided: dict[str, set[str]] = defaultdict(set)
    for kind, table in (("dataset", reg.datasets), ("composer", reg.composers), ("protocol", reg.protocols)):
        for name in table:
            provided[reg.provider(kind, name).plugin].add(name)
    core = provided.pop("cirbench", set())
    assert core == {"smoke", "quick", "full"}, "README says the core provides smoke, quick and full"
    rows = _reference_plugin_rows()
    assert set(rows) == set(provided), (
        f"README 'Reference plugins' rows {sorted(rows)} differ from the registered plugins {sorted(provided)}"
    )
    for plugin, names in provided.items():
        assert rows[plugin] == names, f"README row {plugin!r} lists {sorted(rows[plugin])}, the plugin provides {sorted(names)}"
