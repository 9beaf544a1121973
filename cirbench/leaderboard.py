"""Results -> pandas -> the leaderboard: per (protocol, dataset) a Markdown table, a CSV and
plots; one tidy ``results.csv`` of every result; one self-contained ``index.html``.

Rows of different protocol hashes never share a table. Each table has R@K columns (mean ± std
over seeds where there are several, and a bootstrap interval over queries where the results
keep their per-query ranks: :mod:`cirbench.uncertainty`), the rank group, the composition
gain over the best single-modality baseline (:data:`DEFAULT_BASELINES`), parameter counts,
training time, evaluation throughput, peak memory, device and pretrained weights; composers
whose runs failed or diverged are listed under the table with their status and reason.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pandas as pd
from tabulate import tabulate

from cirbench import uncertainty
from cirbench.results import QueryRanks, RanksFileError, ResultsStore, RunResult
from cirbench.storage import atomic_write_bytes, atomic_write_text

log = logging.getLogger(__name__)

#: The single-modality composers the composition gain is measured against (the baselines
#: plugin's names; ``cirbench leaderboard --baselines`` changes them). A composer's gain is
#: its R@1 minus the best of these on the same protocol, dataset and seeds.
DEFAULT_BASELINES = ("image-only", "text-only")


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
            "queries_per_s": r.eval.queries_per_second if r.eval else None,
            "rank_queries_per_s": (r.eval.extra.get("rank_queries_per_second") if r.eval else None),
            "embed_images_per_s": (r.eval.extra.get("embed_images_per_second") if r.eval else None),
            "peak_memory_mb": r.peak_memory_mb,
            "params_frozen_pretrained": getattr(r.params, "frozen_pretrained", None) if r.params else None,
            "pretrained_weights": ", ".join(r.pretrained_weights),
            "has_ranks": r.ranks is not None,
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
    out["params_frozen_pretrained"] = g["params_frozen_pretrained"].first()
    out["train_s"] = g["train_s"].mean()
    out["queries_per_s"] = g["queries_per_s"].mean()
    out["peak_memory_mb"] = g["peak_memory_mb"].max()
    out["device"] = g["device"].agg(lambda v: ", ".join(sorted(set(v))))
    out["pretrained_weights"] = g["pretrained_weights"].agg(lambda v: ", ".join(sorted(set(x for x in v if x))))
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


def _fmt_ci(low, high) -> str:
    return "" if pd.isna(low) else f"[{100 * low:.1f}, {100 * high:.1f}]"


def _fmt_params(n) -> str:
    return "" if pd.isna(n) else f"{n / 1e6:.2f}M"


def _fmt_number(v, fmt: str, unit: str = "") -> str:
    return "" if v is None or pd.isna(v) else f"{v:{fmt}}{unit}"


# --------------------------------------------------------------------------- per-query statistics


def load_query_ranks(results: Iterable[RunResult], store: ResultsStore | None) -> dict[tuple, QueryRanks]:
    """``{(protocol hash, dataset, composer, seed): QueryRanks}`` of the ok results whose ranks
    file can be read; a missing or altered file is left out with a warning naming it."""
    out = {}
    if store is None:
        return out
    for r in results:
        if r.status != "ok" or r.ranks is None:
            continue
        try:
            qr = store.load_ranks(r)
        except RanksFileError as exc:
            log.warning("leaving out the per-query ranks of %s seed %s: %s", r.composer.name, r.seed, exc)
            continue
        out[(r.protocol.hash, r.dataset.name, r.composer.name, r.seed)] = qr
    return out


def query_statistics(ranks: dict[str, dict[int, QueryRanks]], ks: list[int],
                     baselines: Sequence[str] = DEFAULT_BASELINES) -> tuple[pd.DataFrame, list[str]]:
    """Bootstrap intervals, rank groups and composition gains of one table's composers.

    ``ranks`` is ``{composer: {seed: QueryRanks}}`` (ok runs of one protocol and dataset). Rows
    whose queries differ from the others' (another count or reference order) are left out
    with a note. Returns a frame indexed by composer with ``R@K low`` / ``R@K high``
    (fractions), ``rank group`` (by R@1, :func:`cirbench.uncertainty.rank_groups`), ``gain``,
    ``gain low``, ``gain high`` and ``gain vs`` (R@1 minus the best of ``baselines`` on the
    seeds both have; blank for the baselines themselves), and the notes."""
    notes: list[str] = []
    ranks = {c: v for c, v in ranks.items() if v}
    if not ranks:
        return pd.DataFrame(), notes
    first = next(iter(next(iter(ranks.values())).values()))
    same = {}
    for c, by_seed in ranks.items():
        if all(len(q.ranks) == len(first.ranks) and np.array_equal(q.references, first.references)
               for q in by_seed.values()):
            same[c] = by_seed
        else:
            notes.append(f"{c}: its stored ranks are of other queries than the table's; no interval shown.")
    rows: dict[str, dict] = {c: {} for c in same}
    values = {k: {c: uncertainty.per_query([q.ranks for _, q in sorted(v.items())], k) for c, v in same.items()}
              for k in ks}
    for k in ks:
        for c in same:
            rows[c][f"R@{k} low"], rows[c][f"R@{k} high"] = uncertainty.recall_ci(values[k][c])
    k1 = ks[0]
    for c, label in uncertainty.rank_groups(values[k1]).items():
        rows[c]["rank group"] = label
    present = [b for b in baselines if b in same]
    for c, by_seed in same.items():
        if c in baselines:
            continue  # a baseline's gain over itself says nothing
        best = None
        for b in present:
            seeds = sorted(set(by_seed) & set(same[b])) or None
            mine = uncertainty.per_query([by_seed[s].ranks for s in (seeds or sorted(by_seed))], k1)
            theirs = uncertainty.per_query([same[b][s].ranks for s in (seeds or sorted(same[b]))], k1)
            if best is None or theirs.mean() > best[2].mean():
                best = (b, mine, theirs)
        if best is None:
            continue
        b, mine, theirs = best
        low, high = uncertainty.difference_ci(mine, theirs)
        rows[c].update({"gain": mine.mean() - theirs.mean(), "gain low": low, "gain high": high, "gain vs": b})
    frame = pd.DataFrame.from_dict(rows, orient="index")
    frame.index.name = "composer"
    return frame, notes


def _recall_ks(summary: pd.DataFrame) -> list[str]:
    return sorted({c.split(" ")[0] for c in summary.columns if c.startswith("R@")}, key=lambda c: int(c[2:]))


def table_rows(summary: pd.DataFrame) -> list[dict]:
    """The displayed rows of a table (strings), in the summary's order; the HTML page adds a
    numeric sort key per cell."""
    rcols = _recall_ks(summary)
    has_ci = "rank group" in summary
    has_gain = "gain" in summary and summary["gain"].notna().any()
    has_frozen = "params_frozen_pretrained" in summary and summary["params_frozen_pretrained"].notna().any()
    rows = []
    for _, r in summary.iterrows():
        row = {}
        if has_ci:
            row["rank"] = "" if pd.isna(r.get("rank group")) else r["rank group"]
        row["composer"] = r["composer"]
        for c in rcols:
            row[c] = _fmt_recall(r[f"{c} mean"], r[f"{c} std"])
            if has_ci:
                row[f"{c} 95% CI"] = _fmt_ci(r.get(f"{c} low"), r.get(f"{c} high"))
        if has_gain:
            row["gain R@1"] = ("" if pd.isna(r.get("gain")) else
                               f"{100 * r['gain']:+.1f} {_fmt_ci(r['gain low'], r['gain high'])} vs {r['gain vs']}")
        row["params"] = _fmt_params(r["params_total"])
        row["trainable"] = _fmt_params(r["params_trainable"])
        if has_frozen:
            row["frozen pretrained"] = _fmt_params(r["params_frozen_pretrained"])
        row["train time"] = f"{r['train_s']:.0f} s"
        row["eval queries/s"] = _fmt_number(r.get("queries_per_s"), ".0f")
        row["peak memory"] = _fmt_number(r.get("peak_memory_mb"), ".0f", " MiB")
        row["seeds"] = int(r["seeds"])
        row["device"] = r.get("device", "")
        row["pretrained weights"] = r.get("pretrained_weights") or "none"
        row["plugin"] = r["plugin"]
        rows.append(row)
    return rows


def markdown_table(summary: pd.DataFrame) -> str:
    return tabulate(table_rows(summary), headers="keys", tablefmt="github")


def group_table(part: pd.DataFrame, results: list[RunResult], order: list[str]) -> pd.DataFrame:
    """Per-group Recall@K (fractions, mean over the ok seeds) of one table's composers: index
    composer (in ``order``), columns ``(group, R@K)``; empty when the dataset has no groups."""
    by: dict[str, dict[tuple, list[float]]] = {}
    for r in results:
        if r.status != "ok" or not r.metrics or len(r.metrics.groups) < 2:
            continue
        for g, values in r.metrics.groups.items():
            for k, v in values.items():
                by.setdefault(r.composer.name, {}).setdefault((g, k), []).append(v)
    if not by:
        return pd.DataFrame()
    frame = pd.DataFrame({c: {key: float(np.mean(v)) for key, v in cols.items()} for c, cols in by.items()}).T
    frame = frame.reindex([c for c in order if c in frame.index])
    cols = sorted(frame.columns, key=lambda gk: (gk[0], int(gk[1][2:])))
    return frame[cols]


def _group_markdown(groups: pd.DataFrame) -> str:
    rows = []
    for c, r in groups.iterrows():
        row = {"composer": c}
        for (g, k), v in r.items():
            row[f"{g} {k}"] = f"{100 * v:.1f}"
        rows.append(row)
    return tabulate(rows, headers="keys", tablefmt="github")


def _figure():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(fig) -> bytes:
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, metadata={"Software": None})
    _figure().close(fig)
    return buf.getvalue()


def _plot(summary: pd.DataFrame, title: str, path: Path | None, chance: float | None = None) -> bytes:
    """Bars of R@K per composer with whiskers: the bootstrap 95 % interval over queries where
    the row has one, else ± std over seeds where there are several seeds (no whisker, not a
    zero-length one, for a single seed without stored ranks); a dotted line at the chance
    level of the first K when it is known. Written to ``path`` (when given); returns the PNG."""
    plt = _figure()
    rcols = _recall_ks(summary)
    fig, ax = plt.subplots(figsize=(1.2 + 0.9 * len(summary) * max(1, len(rcols)) / 2, 3.2))
    width = 0.8 / max(1, len(rcols))
    for i, c in enumerate(rcols):
        xs = [j + i * width for j in range(len(summary))]
        mean = 100 * summary[f"{c} mean"].to_numpy(dtype=float)
        ax.bar(xs, mean, width, label=c)
        std = 100 * summary[f"{c} std"].to_numpy(dtype=float)
        low = 100 * summary.get(f"{c} low", pd.Series([np.nan] * len(summary))).to_numpy(dtype=float)
        high = 100 * summary.get(f"{c} high", pd.Series([np.nan] * len(summary))).to_numpy(dtype=float)
        has_ci = ~np.isnan(low)
        below = np.where(has_ci, mean - low, std)
        above = np.where(has_ci, high - mean, std)
        has = has_ci | ~np.isnan(std)  # an interval only where ranks or several seeds give one
        if has.any():
            ax.errorbar([x for x, h in zip(xs, has) if h], mean[has], yerr=np.vstack([below[has], above[has]]),
                        fmt="none", ecolor="black", elinewidth=0.8, capsize=2)
    ax.set_xticks([j + width * (len(rcols) - 1) / 2 for j in range(len(summary))])
    if chance is not None:
        ax.axhline(100 * chance, color="0.3", linestyle=":", linewidth=1)
        ax.annotate(f"chance R@{rcols[0][2:]} = {100 * chance:.1f}", (1.0, 100 * chance), xycoords=("axes fraction", "data"),
                    xytext=(-2, 2), textcoords="offset points", ha="right", fontsize=6, color="0.3")
    ax.set_xticklabels(summary["composer"], rotation=20, ha="right")
    ax.set_ylabel("Recall (%)")
    ax.set_ylim(0, 100)
    ax.set_title(title + "\nwhiskers: 95 % bootstrap CI over queries (else ± std over seeds)", fontsize=8)
    ax.legend(fontsize=7, ncol=len(rcols))
    fig.tight_layout()
    data = _png(fig)
    if path is not None:
        atomic_write_bytes(path, data)
    return data


def _plot_params(summary: pd.DataFrame, title: str) -> bytes:
    """Trainable parameters (millions, log scale) against R@1 of the first K, one labelled dot per composer."""
    plt = _figure()
    k = _recall_ks(summary)[0]
    fig, ax = plt.subplots(figsize=(4.5, 3.2))
    x = summary["params_trainable"].to_numpy(dtype=float) / 1e6
    y = 100 * summary[f"{k} mean"].to_numpy(dtype=float)
    ax.scatter(x, y, s=14)
    for xi, yi, name in zip(x, y, summary["composer"]):
        ax.annotate(str(name), (xi, yi), xytext=(3, 2), textcoords="offset points", fontsize=6)
    if np.all(x > 0):
        ax.set_xscale("log")
    ax.set_xlabel("trainable parameters (M)")
    ax.set_ylabel(f"{k} (%)")
    ax.set_title(title, fontsize=8)
    fig.tight_layout()
    return _png(fig)


def _plot_groups(groups: pd.DataFrame, title: str) -> bytes:
    """Per-group Recall@K of the first K: grouped bars, one group of bars per query group."""
    plt = _figure()
    k = sorted({gk[1] for gk in groups.columns}, key=lambda c: int(c[2:]))[0]
    names = sorted({gk[0] for gk in groups.columns})
    fig, ax = plt.subplots(figsize=(1.5 + 0.5 * len(names) * len(groups) / 2, 3.2))
    width = 0.8 / max(1, len(groups))
    for i, (composer, r) in enumerate(groups.iterrows()):
        ax.bar([j + i * width for j in range(len(names))], [100 * r[(g, k)] for g in names], width, label=str(composer))
    ax.set_xticks([j + width * (len(groups) - 1) / 2 for j in range(len(names))])
    ax.set_xticklabels(names)
    ax.set_ylabel(f"{k} (%)")
    ax.set_ylim(0, 100)
    ax.set_title(title, fontsize=8)
    ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    return _png(fig)


def tidy_frame(results: Iterable[RunResult]) -> pd.DataFrame:
    """Every result as long rows: ``protocol, hash, dataset, composer, seed, status, group,
    metric, value`` (``group`` is ``all`` for overall numbers and the cost measurements;
    metrics are R@K as fractions, ``params_total``, ``params_trainable``, ``train_s``,
    ``eval_s``, ``queries_per_s``, ``peak_memory_mb``, ``wall_s``). A failed run gives its
    cost rows only."""
    rows = []
    for r in results:
        ident = {"protocol": r.protocol.name, "hash": r.protocol.hash, "dataset": r.dataset.name,
                 "composer": r.composer.name, "seed": r.seed, "status": r.status}
        values: list[tuple[str, str, float]] = []
        if r.metrics:
            values += [("all", k, v) for k, v in r.metrics.overall.items()]
            values += [(g, k, v) for g, m in sorted(r.metrics.groups.items()) for k, v in m.items()
                       if list(r.metrics.groups) != ["all"]]  # one group "all" is the overall number
        if r.params:
            values += [("all", "params_total", r.params.total), ("all", "params_trainable", r.params.trainable)]
        if r.train:
            values.append(("all", "train_s", r.train.seconds))
        if r.eval:
            values += [("all", "eval_s", r.eval.seconds), ("all", "queries_per_s", r.eval.queries_per_second)]
        values += [("all", "peak_memory_mb", r.peak_memory_mb), ("all", "wall_s", r.wall_seconds)]
        rows += [{**ident, "group": g, "metric": m, "value": float(v)} for g, m, v in values]
    cols = ["protocol", "hash", "dataset", "composer", "seed", "status", "group", "metric", "value"]
    return pd.DataFrame(rows, columns=cols)


RANK_RULE = ("rows sorted by R@{k} (mean over seeds); the first row leads group 1; each next row joins "
             "the current group unless the paired bootstrap 95 % CI of (leader's R@{k} - its R@{k}) on the "
             "same queries lies above 0, in which case it leads a new group; a group is named by its "
             "leader's position, with = when it has several rows (1, 2=, 2=, 4).")


def _retrieval_grid(dataset, ranks: dict[str, dict[int, QueryRanks]], order: list[str], anchor: str,
                    images: dict[str, str], n_queries: int, k: int = 5) -> dict:
    """The retrieval examples of one table: ``n_queries`` test queries at fixed, evenly spaced
    positions of ``queries()``; for each composer with stored ranks (its lowest seed) the top
    ``k`` ids, correct targets marked. Raises ``ValueError`` when the dataset's queries are
    not the ones ranked."""
    from cirbench.leaderboard_html import data_uri, image_png

    queries = list(dataset.queries())
    chosen = [(c, ranks[c][min(ranks[c])]) for c in order if ranks.get(c)]
    refs = [int(q.reference) for q in queries]
    for c, qr in chosen:
        if qr.references.tolist() != refs:
            raise ValueError(f"the dataset's test queries are not the ones {c} was evaluated on "
                             f"({len(refs)} queries now, {len(qr.references)} ranked)")
    picks = sorted(set(np.linspace(0, len(queries) - 1, num=min(n_queries, len(queries))).round().astype(int).tolist()))
    needed: set[int] = set()
    rows = []
    for i in picks:
        q = queries[i]
        correct = {int(t) for t in q.targets} - {int(q.reference)}
        comps = []
        for c, qr in chosen:
            top = [int(t) for t in qr.top_k[i, :k] if t >= 0]
            needed.update(top)
            comps.append({"name": c, "top": [{"id": f"{anchor}/{t}", "hit": t in correct} for t in top]})
        needed.add(int(q.reference))
        rows.append({"reference": f"{anchor}/{int(q.reference)}", "text": q.text, "composers": comps})
    ids = sorted(needed)
    for start in range(0, len(ids), 64):
        batch = ids[start:start + 64]
        for i, pixels in zip(batch, dataset.images(batch)):
            images[f"{anchor}/{i}"] = data_uri(image_png(pixels))
    caption = (f"{len(rows)} test queries at fixed positions ({', '.join(str(i) for i in picks)} of "
               f"{len(queries)}); top {k} of each composer's lowest seed, the correct target outlined in green.")
    return {"queries": rows, "k": k, "caption": caption}


def write_leaderboard(results: Iterable[RunResult], out_dir: Path, plots: bool = True, *,
                      store: ResultsStore | None = None, baselines: Iterable[str] = DEFAULT_BASELINES,
                      dataset_loader=None, html: bool = True, grid_queries: int = 4) -> list[Path]:
    """Write the leaderboard of ``results`` (e.g. a :class:`cirbench.results.ResultsStore`,
    which skips unreadable files with a warning) under ``out_dir``; returns the Markdown
    files written.

    Per (protocol, dataset): ``<stem>.md``, ``<stem>.csv`` (the summary) and, with ``plots``,
    ``<stem>.png``; for all: ``results.csv`` (:func:`tidy_frame`), ``README.md`` and, with
    ``html``, ``index.html``. Intervals, rank groups and composition gains need the per-query
    ranks: they are read through ``store`` (default: ``results`` when it is a store).
    ``baselines`` are the composers the composition gain is measured against.
    ``dataset_loader(protocol_name, protocol_hash, dataset_name)`` returns the dataset whose
    images the page's retrieval grid shows (or raises: the grid is skipped with the reason);
    None: no grid."""
    from cirbench.leaderboard_html import data_uri, render_page

    if store is None and isinstance(results, ResultsStore):
        store = results
    results = list(results)
    baselines = tuple(baselines)
    df = results_frame(results)
    qranks = load_query_ranks(results, store)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    method = uncertainty.describe_method()
    index = ["# cirbench leaderboard", "",
             "Generated by `cirbench leaderboard`; do not edit by hand. Recall@K in %, "
             "mean ± std over seeds where there are several. One table per protocol "
             "(name@hash) and dataset: rows of different protocols are never compared. "
             f"{method}. Every result as one long table: [results.csv](results.csv); "
             "the page with plots and retrieval examples: [index.html](index.html).", ""]
    atomic_write_text(out_dir / "results.csv", tidy_frame(results).to_csv(index=False))
    groups = [] if df.empty else sorted(df.groupby(["protocol", "hash", "dataset"]), key=lambda g: g[0])
    if not groups:
        index.append("No results yet.")
    sections: list[dict] = []
    images: dict[str, str] = {}
    for (proto, phash, dataset), part in groups:
        label = f"{proto}@{phash}"
        stem = f"{proto}-{phash}--{dataset}"
        summary = summarise(part)
        ranks: dict[str, dict[int, QueryRanks]] = {}
        for (h, d, c, seed), qr in qranks.items():
            if h == phash and d == dataset and seed in set(part.loc[(part.composer == c) & (part.status == "ok"), "seed"]):
                ranks.setdefault(c, {})[seed] = qr
        notes: list[str] = []
        if not summary.empty:
            ks = [int(c[2:]) for c in _recall_ks(summary)]
            stats, notes = query_statistics(ranks, ks, baselines)
            if not stats.empty:
                summary = summary.join(stats, on="composer")
            missing = [c for c in summary["composer"] if c not in ranks]
            if missing:
                notes.append(f"No per-query ranks stored for {', '.join(missing)} (results written before "
                             "ranks were kept, or the ranks file is unreadable): no interval, rank group or gain.")
            ok = part[part.status == "ok"]
            partial = [c for c in ranks if len(ranks[c]) < ok.loc[ok.composer == c, "seed"].nunique()]
            if partial:
                notes.append(f"Intervals of {', '.join(partial)} cover only the seeds with stored ranks.")
            if "gain" in summary and summary["gain"].notna().any():
                notes.append(f"Composition gain: R@{ks[0]} minus the best of {', '.join(baselines)} on the same "
                             "seeds, with the paired bootstrap 95 % CI.")
            else:
                notes.append(f"No composition gain: no stored ranks of the baselines ({', '.join(baselines)}).")
        pretrained = "ImageNet weights" if part["pretrained"].any() else "no pretrained weights"
        devices = ", ".join(sorted(set(part["device"])))
        facts = f"Backbone weights: {pretrained}. Device: {devices}. {_evaluation_facts(part)}".rstrip()
        lines = [f"# {dataset} · protocol {label}", "", facts, ""]
        if summary.empty:
            lines.append("No successful run.")
        else:
            if "rank group" in summary:
                lines += [f"{method}. Rank group: {RANK_RULE.format(k=ks[0])}", ""]
            lines.append(markdown_table(summary))
            lines += [""] + notes
        bad = part[part["status"] != "ok"]
        failures = []
        for _, r in bad.sort_values(["composer", "seed"]).iterrows():
            reason = f" ({r['error'].splitlines()[0][:200]})" if r["error"] else ""
            failures.append(f"{r['composer']} seed {r['seed']}: {r['status']}{reason}")
        if failures:
            lines += ["", "Runs without a result:", ""] + [f"- {f}" for f in failures]
        gtable = group_table(part, [r for r in results if (r.protocol.hash, r.dataset.name) == (phash, dataset)],
                             list(summary["composer"]) if not summary.empty else [])
        if not gtable.empty:
            lines += ["", "Recall@K per query group (%, mean over seeds):", "", _group_markdown(gtable)]
        md = "\n".join(lines) + "\n"
        atomic_write_text(out_dir / f"{stem}.md", md)
        figures = []
        if not summary.empty:
            atomic_write_text(out_dir / f"{stem}.csv", summary.to_csv(index=False))
            if plots or html:
                title = f"{dataset} · {label}"
                png = _plot(summary, title, out_dir / f"{stem}.png" if plots else None, _chance(part))
                figures.append({"src": data_uri(png), "alt": f"Recall@K of {title}, 95 % CI whiskers"})
                if summary["params_trainable"].notna().all():
                    figures.append({"src": data_uri(_plot_params(summary, title)),
                                    "alt": f"trainable parameters vs R@{ks[0]}, {title}"})
                if not gtable.empty:
                    figures.append({"src": data_uri(_plot_groups(gtable, title)), "alt": f"Recall per query group, {title}"})
        written.append(out_dir / f"{stem}.md")
        index += [f"## {dataset} · protocol {label}", "", md.split("\n", 2)[2], ""]
        if html:
            anchor = f"s{len(sections)}"
            rows = table_rows(summary) if not summary.empty else []
            grid, grid_note = None, ""
            if not ranks:
                grid_note = "No retrieval examples: no result of this table keeps its per-query ranks."
            elif dataset_loader is None:
                grid_note = "No retrieval examples: the dataset was not given to the leaderboard."
            else:
                try:
                    ds = dataset_loader(proto, phash, dataset)
                    grid = _retrieval_grid(ds, ranks, list(summary["composer"]), anchor, images, grid_queries)
                except Exception as exc:  # an unavailable dataset must not stop the leaderboard
                    grid_note = f"No retrieval examples: dataset {dataset} is not available here ({exc})."
            sections.append({
                "anchor": anchor, "title": f"{dataset} · protocol {label}", "facts": facts,
                "headers": list(rows[0]) if rows else [], "rows": [list(r.values()) for r in rows],
                "notes": notes, "failures": failures, "figures": figures, "grid": grid, "grid_note": grid_note,
                "group_headers": (["composer"] + [f"{g} {k}" for g, k in gtable.columns]) if not gtable.empty else [],
                "group_rows": [[c] + [f"{100 * v:.1f}" for v in r] for c, r in gtable.iterrows()],
            })
    atomic_write_text(out_dir / "README.md", "\n".join(index).rstrip() + "\n")
    if html:
        atomic_write_text(out_dir / "index.html", render_page(sections, images, method, RANK_RULE.format(k=1)))
    return written
