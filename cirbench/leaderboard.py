"""Results -> pandas -> one Markdown table, CSV and bar chart per (protocol, dataset).

Rows of different protocol hashes never share a table. Each table has R@K columns (mean ± std
over seeds where there are several), parameter counts, training time and the number of seeds;
composers whose runs failed or diverged are listed under the table with their status.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Iterable

import pandas as pd
from tabulate import tabulate

from cirbench.results import RunResult
from cirbench.storage import atomic_write_bytes, atomic_write_text

log = logging.getLogger(__name__)


def results_frame(results: Iterable[RunResult]) -> pd.DataFrame:
    """One row per result: identity, status, R@K, parameters and times."""
    rows = []
    for r in results:
        row = {
            "protocol": r.protocol.name,
            "hash": r.protocol.hash,
            "dataset": r.dataset.name,
            "composer": r.composer.name,
            "plugin": _provider(r.composer),
            "seed": r.seed,
            "status": r.status,
            "params_total": r.params.total if r.params else None,
            "params_trainable": r.params.trainable if r.params else None,
            "train_s": r.train.seconds if r.train else None,
            "eval_s": r.eval.seconds if r.eval else None,
            "device": r.device,
            "pretrained": bool(r.protocol.fields.get("pretrained")),
            "num_queries": r.eval.num_queries if r.eval else None,
            "gallery_size": r.eval.gallery_size if r.eval else None,
            "error": r.error or "",
        }
        for k, v in ((r.eval.extra.get("chance") if r.eval else None) or {}).items():
            row[f"chance {k}"] = v
        if r.metrics:
            row.update(r.metrics.overall)
        rows.append(row)
    return pd.DataFrame(rows)


def _provider(who) -> str:
    """The plugin and its distribution, as ``cirbench list`` names them: ``tirg (cirbench 0.1.0)``."""
    if not who.plugin:
        return who.distribution or ""
    if not who.distribution:
        return who.plugin
    version = f" {who.version}" if who.version else ""
    return f"{who.plugin} ({who.distribution}{version})"


def _recall_columns(df: pd.DataFrame) -> list[str]:
    cols = [c for c in df.columns if c.startswith("R@")]
    return sorted(cols, key=lambda c: int(c[2:]))


def summarise(df: pd.DataFrame) -> pd.DataFrame:
    """Per composer (of one protocol and dataset, status ok): mean and std of each R@K over
    seeds, parameters, mean train time; sorted by R@1 (then the next K) descending."""
    ok = df[df["status"] == "ok"]
    rcols = [c for c in _recall_columns(ok) if ok[c].notna().any()]
    if ok.empty:
        return pd.DataFrame()
    g = ok.groupby("composer")
    out = pd.DataFrame({"seeds": g["seed"].nunique()})
    for c in rcols:
        out[f"{c} mean"] = g[c].mean()
        out[f"{c} std"] = g[c].std(ddof=1)
    out["params_total"] = g["params_total"].first()
    out["params_trainable"] = g["params_trainable"].first()
    out["train_s"] = g["train_s"].mean()
    out["plugin"] = g["plugin"].first()
    order = [f"{c} mean" for c in rcols]
    return out.sort_values(order, ascending=False).reset_index()


def _first_k(part: pd.DataFrame) -> str | None:
    cols = _recall_columns(part)
    return cols[0] if cols else None


def _chance(part: pd.DataFrame) -> float | None:
    """The chance level of the first R@K over the table's ok runs (one value: every run of a
    protocol and dataset ranks the same queries against the same galleries)."""
    k = _first_k(part)
    col = f"chance {k}"
    if k is None or col not in part:
        return None
    values = part.loc[part["status"] == "ok", col].dropna()
    return float(values.iloc[0]) if len(values) else None


def _evaluation_facts(part: pd.DataFrame) -> str:
    """``Evaluation: Q queries, gallery of G images; chance R@1 = x %.`` from the ok runs
    (G is the largest gallery where query groups have galleries of their own)."""
    ok = part[part["status"] == "ok"]
    if ok.empty or ok["num_queries"].isna().all():
        return ""
    queries = int(ok["num_queries"].dropna().iloc[0])
    gallery = int(ok["gallery_size"].dropna().iloc[0])
    text = f"Evaluation: {queries} queries, gallery of {gallery} images"
    chance = _chance(part)
    if chance is not None:
        text += f"; chance R@{_first_k(part)[2:]} (a random ranking) = {100 * chance:.2f} %"
    return text + "."


def _fmt_recall(mean: float, std: float) -> str:
    if pd.isna(std):
        return f"{100 * mean:.1f}"
    return f"{100 * mean:.1f} ± {100 * std:.1f}"


def _fmt_params(n) -> str:
    return "" if pd.isna(n) else f"{n / 1e6:.2f}M"


def markdown_table(summary: pd.DataFrame) -> str:
    rcols = sorted({c.split(" ")[0] for c in summary.columns if c.startswith("R@")}, key=lambda c: int(c[2:]))
    rows = []
    for _, r in summary.iterrows():
        row = {"composer": r["composer"]}
        for c in rcols:
            row[c] = _fmt_recall(r[f"{c} mean"], r[f"{c} std"])
        row["params"] = _fmt_params(r["params_total"])
        row["trainable"] = _fmt_params(r["params_trainable"])
        row["train time"] = f"{r['train_s']:.0f} s"
        row["seeds"] = int(r["seeds"])
        row["plugin"] = r["plugin"]
        rows.append(row)
    return tabulate(rows, headers="keys", tablefmt="github")


def _plot(summary: pd.DataFrame, title: str, path: Path, chance: float | None = None) -> None:
    """Bars of R@K per composer; a whisker of ± std over seeds only where there are several
    seeds (no whisker, not a zero-length one, for a single seed); a dotted line at the chance
    level of the first K when it is known."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rcols = sorted({c.split(" ")[0] for c in summary.columns if c.startswith("R@")}, key=lambda c: int(c[2:]))
    fig, ax = plt.subplots(figsize=(1.2 + 0.9 * len(summary) * max(1, len(rcols)) / 2, 3.2))
    width = 0.8 / max(1, len(rcols))
    for i, c in enumerate(rcols):
        xs = [j + i * width for j in range(len(summary))]
        ax.bar(xs, 100 * summary[f"{c} mean"], width, label=c)
        spread = summary[f"{c} std"]
        has = spread.notna().to_numpy()  # an interval only where several seeds give one
        if has.any():
            ax.errorbar([x for x, h in zip(xs, has) if h], 100 * summary[f"{c} mean"][has],
                        yerr=100 * spread[has], fmt="none", ecolor="black", elinewidth=0.8, capsize=2)
    ax.set_xticks([j + width * (len(rcols) - 1) / 2 for j in range(len(summary))])
    if chance is not None:
        ax.axhline(100 * chance, color="0.3", linestyle=":", linewidth=1)
        ax.annotate(f"chance R@{rcols[0][2:]} = {100 * chance:.1f}", (1.0, 100 * chance), xycoords=("axes fraction", "data"),
                    xytext=(-2, 2), textcoords="offset points", ha="right", fontsize=6, color="0.3")
    ax.set_xticklabels(summary["composer"], rotation=20, ha="right")
    ax.set_ylabel("Recall (%)")
    ax.set_ylim(0, 100)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, ncol=len(rcols))
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, metadata={"Software": None})
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


def write_leaderboard(results: Iterable[RunResult], out_dir: Path, plots: bool = True) -> list[Path]:
    """Write the leaderboard of ``results`` (e.g. a :class:`cirbench.results.ResultsStore`,
    which skips unreadable files with a warning) under ``out_dir``; returns the Markdown
    files written."""
    df = results_frame(results)
    out_dir = Path(out_dir)
    written: list[Path] = []
    index = ["# cirbench leaderboard", "",
             "Generated by `cirbench leaderboard`; do not edit by hand. Recall@K in %, "
             "mean ± std over seeds where there are several. One table per protocol "
             "(name@hash) and dataset: rows of different protocols are never compared.", ""]
    groups = [] if df.empty else sorted(df.groupby(["protocol", "hash", "dataset"]), key=lambda g: g[0])
    if not groups:
        index.append("No results yet.")
    for (proto, phash, dataset), part in groups:
        label = f"{proto}@{phash}"
        stem = f"{proto}-{phash}--{dataset}"
        summary = summarise(part)
        pretrained = "ImageNet weights" if part["pretrained"].any() else "no pretrained weights"
        devices = ", ".join(sorted(set(part["device"])))
        lines = [f"# {dataset} · protocol {label}", "",
                 f"Backbone weights: {pretrained}. Device: {devices}. {_evaluation_facts(part)}", ""]
        if summary.empty:
            lines.append("No successful run.")
        else:
            lines.append(markdown_table(summary))
        bad = part[part["status"] != "ok"]
        if not bad.empty:
            lines += ["", "Runs without a result:", ""]
            for _, r in bad.sort_values(["composer", "seed"]).iterrows():
                reason = f" ({r['error'].splitlines()[0][:200]})" if r["error"] else ""
                lines.append(f"- {r['composer']} seed {r['seed']}: {r['status']}{reason}")
        md = "\n".join(lines) + "\n"
        out_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out_dir / f"{stem}.md", md)
        if not summary.empty:
            atomic_write_text(out_dir / f"{stem}.csv", summary.to_csv(index=False))
            if plots:
                _plot(summary, f"{dataset} · {label}", out_dir / f"{stem}.png", _chance(part))
        written.append(out_dir / f"{stem}.md")
        index += [f"## {dataset} · protocol {label}", "", md.split("\n", 2)[2], ""]
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out_dir / "README.md", "\n".join(index).rstrip() + "\n")
    return written
