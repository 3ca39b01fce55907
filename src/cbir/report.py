"""The papers' tables and figures, built from the evaluation stage's files.

Tables are written as CSV (numbers, for machines) and Markdown (rounded, for people); figures as
PNG through seaborn. Every number in a table comes from a ``summary.parquet`` or ``timing.parquet``
of the evaluation and retrieval stages, gathered by :func:`collect`, except the rows marked
``quoted``: published numbers of other methods, copied from their papers for comparison.
"""

from __future__ import annotations

import logging
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from cbir.io import read_parquet

log = logging.getLogger(__name__)

METHOD_NAMES = {"ba": "BA", "itq": "ITQ", "pcah": "PCAH", "lsh": "LSH", "sh": "SH", "euclidean": "Euclidean (no hashing)"}

#: Published mAP (%) quoted for comparison: (dataset kind, method, bits) -> value, with sources.
#: BA (CNN) is the first paper's own result; CNNH and CNNH+ are from Xia et al., "Supervised
#: hashing for image retrieval via image representation learning", AAAI 2014, whose protocol
#: differs (mAP over the whole database, 1,000 queries), hence "quoted", not "measured".
PUBLISHED = pd.DataFrame(
    [
        *[("cifar10", "BA (CNN), published", b, v) for b, v in zip((12, 24, 32, 48), (93.84, 92.55, 91.99, 92.98))],
        *[("mnist", "BA (CNN), published", b, v) for b, v in zip((12, 24, 32, 48), (98.16, 97.66, 97.51, 97.19))],
        *[("cifar10", "CNNH, quoted", b, v) for b, v in zip((12, 24, 32, 48), (43.9, 51.1, 50.9, 52.2))],
        *[("cifar10", "CNNH+, quoted", b, v) for b, v in zip((12, 24, 32, 48), (46.5, 52.1, 52.1, 53.2))],
        *[("mnist", "CNNH, quoted", b, v) for b, v in zip((12, 24, 32, 48), (95.7, 96.3, 95.6, 96.0))],
        *[("mnist", "CNNH+, quoted", b, v) for b, v in zip((12, 24, 32, 48), (96.9, 97.5, 97.1, 97.5))],
    ],
    columns=["kind", "method", "bits", "map_percent"],
)


# --------------------------------------------------------------------------------------------
# Collecting the evaluation files
# --------------------------------------------------------------------------------------------


def parse_descriptor(descriptor: str) -> dict:
    """``hashing/<backbone>/<method>/<bits>``, ``metric/<backbone>/<model>`` or
    ``features/<backbone>/<stage>/<layer>`` as fields."""
    parts = descriptor.split("/")
    if parts[0] == "hashing" and len(parts) == 4:
        return {"pipeline": "hashing", "backbone": parts[1], "method": parts[2], "bits": int(parts[3])}
    if parts[0] == "metric" and len(parts) == 3:
        return {"pipeline": "metric", "backbone": parts[1], "method": parts[2], "bits": None}
    if parts[0] == "features" and len(parts) == 4:
        return {"pipeline": "features", "backbone": parts[1], "method": "euclidean", "bits": None}
    raise ValueError(f"not a descriptor name: {descriptor!r}")


def collect(entries: list[dict]) -> pd.DataFrame:
    """One row per evaluated descriptor: its fields, its mean metrics and its search time.

    ``entries`` are dicts with ``dataset``, ``kind`` (the dataset kind), ``descriptor``,
    ``summary`` and ``timing`` (paths of the evaluation and retrieval files).
    """
    rows = []
    for entry in entries:
        summary = read_parquet(entry["summary"]).iloc[0].to_dict()
        timing = read_parquet(entry["timing"])
        times = timing.loc[timing["index"] == "exact", "seconds"].to_numpy()
        approximate = timing[timing["index"] == "approximate"]
        rows.append(
            {
                "dataset": entry["dataset"],
                "kind": entry["kind"],
                "descriptor": entry["descriptor"],
                **parse_descriptor(entry["descriptor"]),
                **summary,
                "time_median_ms": 1e3 * float(np.median(times)),
                "time_p95_ms": 1e3 * float(np.percentile(times, 95)),
                "ann_time_median_ms": 1e3 * float(approximate["seconds"].median()) if len(approximate) else np.nan,
                "ann_recall": float(approximate["recall_at_k"].iloc[0]) if len(approximate) else np.nan,
            }
        )
    frame = pd.DataFrame(rows)
    frame["bits"] = frame["bits"].astype("Int64")
    return frame


# --------------------------------------------------------------------------------------------
# Tables
# --------------------------------------------------------------------------------------------


def markdown(table: pd.DataFrame) -> str:
    """A GitHub-flavoured Markdown table of already formatted cells."""
    lines = ["| " + " | ".join(map(str, table.columns)) + " |", "|" + "|".join(" --- " for _ in table.columns) + "|"]
    lines += ["| " + " | ".join("" if pd.isna(v) else str(v) for v in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join(lines)


def write_table(table: pd.DataFrame, csv_path, markdown_path, title: str, note: str = "", digits: int = 2) -> None:
    """The table as CSV (full precision) and as a Markdown file with a title and a note."""
    Path(csv_path).parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(csv_path, index=False)
    shown = table.copy()
    for column in shown.columns:
        if pd.api.types.is_float_dtype(shown[column]):
            shown[column] = shown[column].map(lambda v: "" if pd.isna(v) else f"{v:.{digits}f}")
    text = f"### {title}\n\n{markdown(shown)}\n"
    Path(markdown_path).write_text(text + (f"\n{note}\n" if note else ""))


def ba_table(metrics: pd.DataFrame, method: str = "ba") -> pd.DataFrame:
    """Table I: mAP@k (%) of one hashing method per dataset, backbone and code length,
    conventional and tie-aware."""
    rows = metrics[(metrics["pipeline"] == "hashing") & (metrics["method"] == method)]
    table = rows.assign(map=100 * rows["map"], tie_aware_map=100 * rows["tie_aware_map"])
    return table[["dataset", "backbone", "bits", "k", "map", "tie_aware_map"]].sort_values(["dataset", "backbone", "bits"]).reset_index(drop=True)


def methods_table(metrics: pd.DataFrame) -> pd.DataFrame:
    """Table II: mAP@k (%) of every measured hashing method per dataset and code length
    (tie-aware beside it), Euclidean search on the unhashed features, and quoted published
    numbers for the datasets of the first paper."""
    hashing = metrics[metrics["pipeline"] == "hashing"]
    measured = hashing.assign(
        method=hashing["method"].map(METHOD_NAMES).fillna(hashing["method"]),
        source="measured",
        map=100 * hashing["map"],
        tie_aware_map=100 * hashing["tie_aware_map"],
    )[["dataset", "backbone", "method", "source", "bits", "map", "tie_aware_map"]]
    # The unhashed features, at every code length for side-by-side reading.
    features = metrics[metrics["pipeline"] == "features"]
    reference = [
        pd.DataFrame(
            {"dataset": row.dataset, "backbone": row.backbone, "method": METHOD_NAMES["euclidean"], "source": "measured", "bits": sorted(hashing.loc[hashing["dataset"] == row.dataset, "bits"].unique()), "map": 100 * row.map, "tie_aware_map": 100 * row.tie_aware_map}
        )
        for row in features.itertuples()
    ]
    quoted = [
        PUBLISHED[PUBLISHED["kind"] == kind].assign(dataset=dataset, backbone="", source="quoted", tie_aware_map=np.nan).rename(columns={"map_percent": "map"})
        for dataset, kind in metrics[["dataset", "kind"]].drop_duplicates().itertuples(index=False)
        if dataset in set(hashing["dataset"])
    ]
    table = pd.concat([measured, *reference, *[q.drop(columns="kind") for q in quoted]], ignore_index=True)
    table["bits"] = table["bits"].astype(int)
    return table.sort_values(["dataset", "source", "method", "bits"], kind="stable").reset_index(drop=True)[["dataset", "backbone", "method", "source", "bits", "map", "tie_aware_map"]]


def wide(table: pd.DataFrame, index: list[str], value: str = "map") -> pd.DataFrame:
    """One column per code length: how the papers print their tables."""
    out = table.pivot_table(index=index, columns="bits", values=value, aggfunc="first", sort=False)
    out.columns = [f"{b} bits" for b in out.columns]
    return out.reset_index()


def metric_learning_table(metrics: pd.DataFrame, models: list[str]) -> pd.DataFrame:
    """The second paper's results: per dataset and model, precision@k, mAP (whole database and
    @k, with tie-aware), Holidays mAP where it applies, and search time per query."""
    rows = metrics[metrics["pipeline"] == "metric"].copy()
    rows["order"] = rows["method"].map({m: i for i, m in enumerate(models)})
    columns = ["dataset", "backbone", "method", "p@1", "p@5", "p@10", "p@20", "p@50", "p@100", "map_all", "tie_aware_map_all", "map", "tie_aware_map", "time_median_ms", "time_p95_ms"]
    if "holidays_map" in rows:
        columns.insert(columns.index("map"), "holidays_map")
    table = rows.sort_values(["dataset", "backbone", "order"])[columns].rename(columns={"method": "model"})
    for column in table.columns:
        if column.startswith(("p@", "map", "tie_aware", "holidays")):
            table[column] = 100 * table[column]
    return table.reset_index(drop=True)


def timing_table(metrics: pd.DataFrame) -> pd.DataFrame:
    """Search time per query (median and 95th percentile, ms) of every descriptor: the second
    paper's Table 1, extended to the hashing methods."""
    table = metrics.assign(method=metrics["method"].map(METHOD_NAMES).fillna(metrics["method"]))
    columns = ["dataset", "pipeline", "backbone", "method", "bits", "dim", "n_database", "time_median_ms", "time_p95_ms"]
    if table["ann_recall"].notna().any():
        columns += ["ann_time_median_ms", "ann_recall"]
    table = table[columns].astype({"bits": "Int64", "dim": "Int64"})  # counts, blank where not applicable
    return table.sort_values(["dataset", "pipeline", "backbone", "method", "bits"]).reset_index(drop=True)


# --------------------------------------------------------------------------------------------
# Figures
# --------------------------------------------------------------------------------------------

sns.set_theme(context="paper", style="whitegrid", font_scale=1.1)


def _save(figure, path) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=150, bbox_inches="tight")
    plt.close(figure)


def finetune_figure(histories: dict[str, pd.DataFrame], path) -> None:
    """Fig. 4: training and validation accuracy per epoch, one panel per dataset/backbone."""
    frames = []
    for name, history in histories.items():
        for column, label in (("train_accuracy", "training"), ("val_accuracy", "validation")):
            if history[column].notna().any():
                frames.append(pd.DataFrame({"run": name, "epoch": history["epoch"], "accuracy (%)": 100 * history[column], "set": label}))
    data = pd.concat(frames, ignore_index=True)
    grid = sns.relplot(data=data, x="epoch", y="accuracy (%)", hue="set", col="run", kind="line", marker="o", col_wrap=min(3, len(histories)), height=3.2, aspect=1.25, facet_kws={"sharey": False})
    grid.set_titles("{col_name}")
    grid.figure.suptitle("Fine-tuning accuracy per epoch", y=1.03)
    _save(grid.figure, path)


def ba_objective_figure(traces: dict[tuple[str, int], pd.DataFrame], path) -> None:
    """Fig. 5: the binary autoencoder's objective E_Q and the reconstruction error of its hash
    function's own codes per MAC iteration, one line per code length."""
    frames = [trace.assign(dataset=dataset, bits=f"{bits} bits") for (dataset, bits), trace in traces.items() if len(trace)]
    data = pd.concat(frames, ignore_index=True)
    datasets = list(dict.fromkeys(data["dataset"]))
    figure, axes = plt.subplots(2, len(datasets), figsize=(4.2 * len(datasets), 6.4), squeeze=False)
    for column, dataset in enumerate(datasets):
        subset = data[data["dataset"] == dataset]
        sns.lineplot(data=subset, x="iteration", y="E_Q_z", hue="bits", marker="o", ax=axes[0, column])
        sns.lineplot(data=subset, x="iteration", y="recon_h", hue="bits", marker="o", ax=axes[1, column], legend=False)
        axes[0, column].set(title=dataset, ylabel="objective E_Q(h, f, Z; μ)", xlabel="")
        axes[1, column].set(ylabel="reconstruction error of h(X)\n(mean squared, per image)", xlabel="MAC iteration (μ grows each iteration)")
        axes[0, column].get_legend().remove()
    # one legend beside the panels: inside, it hides the curves
    handles, labels = axes[0, 0].get_legend_handles_labels()
    figure.suptitle("Binary autoencoder training", y=1.0)
    figure.tight_layout()
    figure.legend(handles, labels, title="code length", loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    _save(figure, path)


def pr_figure(curves: dict[tuple[str, str, int], pd.DataFrame], path, curve: str = "hamming-radius") -> None:
    """Fig. 6: precision-recall curves per code length (Hamming-radius sweep by default), one
    panel per dataset and hashing method."""
    frames = [c[c["curve"] == curve].assign(dataset=d, method=METHOD_NAMES.get(m, m), bits=f"{b} bits") for (d, m, b), c in curves.items()]
    data = pd.concat(frames, ignore_index=True).dropna(subset=["precision"])
    grid = sns.relplot(data=data, x="recall", y="precision", hue="bits", col="method", row="dataset", kind="line", marker=".", height=3.0, aspect=1.1, facet_kws={"sharex": True, "sharey": True}, sort=False)
    grid.set_titles("{row_name} · {col_name}")
    grid.set(xlim=(0, 1.02), ylim=(0, 1.02))
    grid.figure.suptitle("Precision–recall by Hamming radius" if curve == "hamming-radius" else "Precision–recall by number retrieved", y=1.02)
    _save(grid.figure, path)


def metric_figures(metrics: pd.DataFrame, curves: dict[tuple[str, str], pd.DataFrame], models: list[str], precision_path, map_path) -> None:
    """Figs. 8-9 of the second paper: precision at k and mAP of the eight models per dataset."""
    frames = [c[c["curve"] == "top-k"].assign(dataset=d, model=m) for (d, m), c in curves.items()]
    data = pd.concat(frames, ignore_index=True)
    data = data[data["cutoff"] <= 100].assign(precision=lambda f: 100 * f["precision"])
    grid = sns.relplot(data=data, x="cutoff", y="precision", hue="model", hue_order=models, style="model", style_order=models, col="dataset", kind="line", markers=True, dashes=True, height=3.4, aspect=1.2)
    grid.set(xscale="log", xlabel="number of images retrieved (k)", ylabel="precision@k (%)")
    grid.set_titles("{col_name}")
    _save(grid.figure, precision_path)

    rows = metrics[metrics["pipeline"] == "metric"]
    long = rows.melt(id_vars=["dataset", "method"], value_vars=["map_all", "tie_aware_map_all"], var_name="measure", value_name="mAP (%)")
    long["mAP (%)"] *= 100
    long["measure"] = long["measure"].map({"map_all": "mAP", "tie_aware_map_all": "tie-aware mAP"})
    grid = sns.catplot(data=long, x="method", y="mAP (%)", hue="measure", col="dataset", kind="bar", order=models, height=3.4, aspect=1.5)
    grid.set_xticklabels(rotation=35, ha="right")
    grid.set(xlabel="")
    grid.set_titles("{col_name}")
    _save(grid.figure, map_path)


def contact_sheet(rows: list, path, mode: str, title: str) -> None:
    """A grid of images: per row a query and its results.

    ``rows`` holds ``(query image, caption, results)`` with ``results`` a list of
    ``(image, caption, relevant)``; ``relevant`` True frames a result green, False red, None grey.
    """
    n_columns = 1 + max(len(results) for _, _, results in rows)
    figure, axes = plt.subplots(len(rows), n_columns, figsize=(1.15 * n_columns, 1.35 * len(rows)), squeeze=False)
    cmap = "gray" if mode == "L" else None
    colors = {True: "tab:green", False: "tab:red", None: "0.6"}
    for r, (query, query_caption, results) in enumerate(rows):
        cells = [(query, query_caption, "query")] + list(results)
        for c in range(n_columns):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c >= len(cells):
                ax.axis("off")
                continue
            image, caption, relevant = cells[c]
            ax.imshow(np.asarray(image), cmap=cmap, vmin=0, vmax=255)
            ax.set_xlabel(caption, fontsize=6)
            for spine in ax.spines.values():
                spine.set_edgecolor("black" if relevant == "query" else colors[relevant])
                spine.set_linewidth(1.5 if relevant == "query" else 3)
            if r == 0:
                ax.set_title("query" if c == 0 else f"#{c}", fontsize=8)
    figure.suptitle(title, y=1.0, fontsize=10)
    figure.tight_layout()
    _save(figure, path)


def top10_figure(ranking: pd.DataFrame, manifest: pd.DataFrame, mode: str, path, n_queries: int = 8, n_results: int = 10, seed: int = 0, title: str = "") -> None:
    """Fig. 7: random queries and their top results, correct ones framed green, wrong ones red."""
    from cbir.datasets import ImageReader

    reader = ImageReader(manifest, mode)
    position = {image_id: i for i, image_id in enumerate(manifest["image_id"])}
    class_name = dict(zip(manifest["image_id"], manifest["class_name"].astype(str)))
    queries = ranking["query_id"].drop_duplicates()
    rows = []
    for query in queries.sample(n=min(n_queries, len(queries)), random_state=seed):
        results = ranking[ranking["query_id"] == query].sort_values("rank").head(n_results)
        rows.append(
            (
                reader[position[query]],
                class_name[query][:14],
                [(reader[position[i]], class_name[i][:14], bool(rel)) for i, rel in zip(results["image_id"], results["relevant"])],
            )
        )
    contact_sheet(rows, path, mode, title or "Top results (green: same class, red: another class)")


# --------------------------------------------------------------------------------------------
# Stage functions: what the report rules run
# --------------------------------------------------------------------------------------------


def hashing_tables(metrics_path, table1_csv, table1_md, table2_csv, table2_md) -> None:
    """Tables I and II of the first paper from the collected metrics."""
    metrics = read_parquet(metrics_path)
    k = int(metrics["k"].max())
    table1 = ba_table(metrics)
    write_table(table1, table1_csv, table1_md, f"Table I: binary autoencoder mAP@{k} (%)", "Columns `map` (ties broken by database order, as faiss does) and `tie_aware_map` (expected AP over random orders of tied items).")
    table2 = methods_table(metrics)
    table2.to_csv(table2_csv, index=False)
    quoted = table2["source"] == "quoted"
    shown = wide(table2.assign(method=table2["method"] + np.where(quoted, " †", "")), ["dataset", "method"])
    shown_tie_aware = wide(table2[~quoted], ["dataset", "method"], "tie_aware_map")
    note = f"mAP@{k} of the methods measured on this pipeline's features"
    if quoted.any():
        note += "; † quoted from the literature (other features and protocol: mAP over the whole database), for orientation only"
    text = (
        f"### Table II: hashing methods, mAP (%)\n\n{markdown(_formatted(shown))}\n\n{note}.\n\n"
        f"Tie-aware mAP@{k} of the measured methods:\n\n{markdown(_formatted(shown_tie_aware))}\n"
    )
    Path(table2_md).write_text(text)


def _formatted(table: pd.DataFrame, digits: int = 2) -> pd.DataFrame:
    return table.apply(lambda c: c.map(lambda v: "" if pd.isna(v) else f"{v:.{digits}f}") if pd.api.types.is_float_dtype(c) else c)


def metric_learning_tables(metrics_path, models, table_csv, table_md) -> None:
    metrics = read_parquet(metrics_path)
    table = metric_learning_table(metrics, models)
    write_table(table, table_csv, table_md, "Siamese and triplet models: precision@k and mAP (%), search time per query (ms)", "`map_all`: mAP over the whole ranked database; `map`: mAP@k; `tie_aware_*`: the tie-aware versions; `holidays_map`: the official Holidays evaluation.")


def timing_tables(metrics_path, table_csv, table_md) -> None:
    metrics = read_parquet(metrics_path)
    write_table(timing_table(metrics), table_csv, table_md, "Search time per query (ms)", "Exact search, one query at a time on one thread (faiss), including the call overhead.", digits=3)
