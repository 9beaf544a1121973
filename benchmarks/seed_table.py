"""Mean ± std and a 95 % confidence interval over seeds, per composer, from a results folder.

    python benchmarks/seed_table.py RESULTS_DIR PROTOCOL_LABEL DATASET [COMPOSER ...]

Reads ``RESULTS_DIR/<protocol label>/<dataset>/<composer>/seed*.json`` (runs with status
``ok``) and prints a Markdown table: per composer the seeds, and for R@1, R@5, R@10, R@50
(in %) ``mean ± std`` with the sample standard deviation (n - 1) and the 95 % two-sided
Student-t interval ``mean ± t_{0.975, n-1} · std / sqrt(n)`` (n = 3: t = 4.303), plus the
mean training seconds and the trainable / frozen-pretrained parameter counts. This is how
the tables of the reference plugins' READMEs were made (issue 11).
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

from scipy import stats

KS = ("R@1", "R@5", "R@10", "R@50")


def summarise(values: list[float]) -> tuple[float, float, float, float]:
    """``(mean, std, ci_low, ci_high)`` of ``values`` (std with n - 1; t-interval, 95 %)."""
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, float("nan"), float("nan"), float("nan")
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = stats.t.ppf(0.975, n - 1) * std / math.sqrt(n)
    return mean, std, mean - half, mean + half


def load(root: Path, protocol: str, dataset: str, composer: str) -> list[dict]:
    runs = []
    for path in sorted((root / protocol / dataset / composer).glob("seed*.json")):
        result = json.loads(path.read_text())
        if result.get("status") == "ok":
            runs.append(result)
    return runs


def table(root: Path, protocol: str, dataset: str, composers: list[str]) -> str:
    head = "| composer | seeds | " + " | ".join(f"{k} mean ± std [95 % CI]" for k in KS)
    head += " | train s | trainable | frozen pretrained |"
    lines = [head, "|" + "---|" * (len(KS) + 5)]
    for name in composers:
        runs = load(root, protocol, dataset, name)
        if not runs:
            continue
        cells = []
        for k in KS:
            mean, std, lo, hi = summarise([100 * r["metrics"]["overall"][k] for r in runs])
            cells.append(f"{mean:.1f} ± {std:.1f} [{lo:.1f}, {hi:.1f}]")
        secs = sum(r["train"]["seconds"] for r in runs) / len(runs)
        seeds = ",".join(str(r["seed"]) for r in runs)

        def counts(key: str) -> str:  # every distinct value the seeds' files record
            values = sorted({r["params"].get(key, 0) for r in runs})
            return " / ".join(f"{v / 1e6:.2f}M" for v in values)

        lines.append(
            f"| `{name}` | {seeds} | " + " | ".join(cells)
            + f" | {secs:.0f} | {counts('trainable')} | {counts('frozen_pretrained')} |"
        )
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    if len(argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    root, protocol, dataset, *composers = argv
    base = Path(root) / protocol / dataset
    if not base.is_dir():
        print(f"seed_table: no folder {base}", file=sys.stderr)
        return 2
    composers = composers or sorted(p.name for p in base.iterdir() if p.is_dir())
    print(table(Path(root), protocol, dataset, composers))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
