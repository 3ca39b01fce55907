"""The papers' tables and figures, from the evaluation files of every repeat (seed).

``collect`` gathers each (dataset, seed, descriptor) summary into one row per ground truth;
``aggregate`` turns the repeats into ``results.tsv``: per number its mean, standard deviation
(over seeds, ddof = 1), n and the values themselves. Every table is derived from that file, so
the tables, the README (``cbir readme``) and ``cbir compare`` read the same numbers. Tables are
written as TSV (numbers, with provenance comment lines) and Markdown ("mean ± sd", for people);
figures as PNG through seaborn, showing the spread over seeds.

Rows marked ``quoted`` are published numbers copied from the first paper's Table II, for
comparison only: other features and, for CNNH/CNNH+, another protocol.
"""

from __future__ import annotations

import json
import logging

import numpy as np
import pandas as pd

from cbir.io import read_metadata, read_parquet, write_parquet, write_table, write_text
from cbir.paths import parse_descriptor

log = logging.getLogger(__name__)

METHOD_NAMES = {
    "ba": "BA", "itq": "ITQ", "pcah": "PCAH", "lsh": "LSH", "sh": "SH", "cca_itq": "CCA-ITQ",
    "ssdh": "SSDH", "dpsh": "DPSH", "hashnet": "HashNet", "dsh": "DSH", "greedyhash": "GreedyHash", "csq": "CSQ",
    "euclidean": "Euclidean (no hashing)",
}


def method_name(method: str) -> str:
    """A method's name in tables and figures: ``dpsh_head`` -> ``DPSH (head)``; a plug-in's
    ``display_name`` (:mod:`cbir.plugins`), else its entry-point name."""
    from cbir.methods import deep_hashers, deep_method
    from cbir.plugins import display_name

    def name(m: str) -> str:
        return METHOD_NAMES.get(m) or display_name(m) or m

    base = deep_method(method)
    return f"{name(base)} (head)" if base != method and base in deep_hashers() else name(method)


GROUND_TRUTH_NAMES = {"labels": "class labels", "neighbours": "Euclidean neighbours"}
KEYS = ["dataset", "kind", "pipeline", "backbone", "method", "bits", "ground_truth", "metric"]
#: Per-query means that are fractions; results.tsv holds them in percent, as the papers print them.
FRACTIONS = ("map", "tie_aware_map", "map_all", "tie_aware_map_all", "recall", "holidays_map", "ann_recall")

#: The first paper's Table II as printed: mAP@1000 (%) at 12/24/32/48 bits (None: not reported).
QUOTED_SOURCE = "quoted (first paper's Table II)"
PUBLISHED = pd.DataFrame(
    [
        (kind, method, bits, value)
        for kind, method, values in [
            ("cifar10", "CNNH", (43.9, 51.1, 50.9, 52.2)),
            ("cifar10", "CNNH+", (55.2, 56.6, 55.8, 58.1)),
            ("cifar10", "Peng et al.", (83.85, 84.50, 85.07, 85.56)),
            ("cifar10", "SSDH", (90.59, None, 90.63, 91.45)),
            ("cifar10", "BA (first paper)", (93.84, 92.55, 91.99, 92.98)),
            ("mnist", "CNNH", (95.7, 96.3, 95.6, 96.0)),
            ("mnist", "CNNH+", (96.9, 97.5, 97.1, 97.5)),
            ("mnist", "SSDH", (99.31, None, 99.37, 99.39)),
            ("mnist", "BA (first paper)", (98.16, 97.66, 97.51, 97.19)),
        ]
        for bits, value in zip((12, 24, 32, 48), values)
    ],
    columns=["kind", "method", "bits", "mean"],
)


# --------------------------------------------------------------------------------------------
# Collecting and aggregating the evaluation files
# --------------------------------------------------------------------------------------------


def collect(entries: list[dict]) -> pd.DataFrame:
    """One row per (dataset, seed, descriptor, ground truth): its fields, mean metrics and search
    time. ``entries`` are dicts with ``dataset``, ``seed``, ``kind``, ``descriptor``, ``summary``
    and ``timing`` (paths of the evaluation files)."""
    rows = []
    for entry in entries:
        timing = read_parquet(entry["timing"])
        exact = timing.loc[timing["index"] == "exact", "seconds"].to_numpy()
        approximate = timing[timing["index"] == "approximate"]
        times = {
            "time_median_ms": 1e3 * float(np.median(exact)),
            "time_p95_ms": 1e3 * float(np.percentile(exact, 95)),
            "ann_time_median_ms": 1e3 * float(approximate["seconds"].median()) if len(approximate) else np.nan,
            "ann_recall": float(approximate["recall_at_k"].iloc[0]) if len(approximate) else np.nan,
        }
        fields = {key: entry[key] for key in ("dataset", "seed", "kind", "descriptor")}
        for summary in read_parquet(entry["summary"]).to_dict("records"):
            rows.append({**fields, **parse_descriptor(entry["descriptor"]), **summary, **times})
    frame = pd.DataFrame(rows)
    frame["bits"] = frame["bits"].astype("Int64")
    return frame


def aggregate(metrics: pd.DataFrame) -> pd.DataFrame:
    """Mean, sd, n and the per-seed values of every number, over the seeds (long format).

    Ranking metrics are in percent; search times (ms) are listed under ground truth ``-``, as
    they do not depend on it.
    """
    ranking = [c for c in metrics.columns if c in FRACTIONS or c.startswith(("p@", "tie_aware_p@"))]
    timing = [c for c in ("time_median_ms", "time_p95_ms", "ann_time_median_ms") if c in metrics]
    ids = ["dataset", "kind", "pipeline", "backbone", "method", "bits", "ground_truth", "seed"]
    scored = metrics.melt(id_vars=ids, value_vars=ranking, var_name="metric", value_name="value")
    scored["value"] *= 100
    timed = metrics[metrics["ground_truth"] == "labels"].assign(ground_truth="-").melt(id_vars=ids, value_vars=timing, var_name="metric", value_name="value")
    long = pd.concat([scored, timed], ignore_index=True).dropna(subset=["value"]).sort_values("seed")
    grouped = long.groupby(KEYS, dropna=False, sort=False)
    results = grouped["value"].agg(mean="mean", sd=lambda v: v.std(ddof=1) if len(v) > 1 else np.nan, n="count").reset_index()
    results["values"] = grouped["value"].agg(lambda v: ";".join(f"{x:.6g}" for x in v)).to_numpy()
    results["seeds"] = grouped["seed"].agg(lambda v: ";".join(map(str, v))).to_numpy()
    results["unit"] = np.where(results["metric"].str.endswith("_ms"), "ms", "%")
    results["bits"] = results["bits"].astype("Int64")
    return results.sort_values(KEYS, kind="stable").reset_index(drop=True)


def read_results(path) -> pd.DataFrame:
    """A ``results.tsv`` written by :func:`write_report` (or published with ``cbir publish``)."""
    try:
        frame = pd.read_csv(path, sep="\t", comment="#", dtype={"values": str, "seeds": str, "ground_truth": str}, keep_default_na=False, na_values=[""])
        missing = sorted({*KEYS, "metric", "mean", "sd", "n"} - set(frame.columns))
        if missing:
            raise ValueError(f"no column(s) {', '.join(missing)}")
        frame["bits"] = frame["bits"].astype("Int64")
        frame[["mean", "sd", "n"]] = frame[["mean", "sd", "n"]].astype(float)
    except (ValueError, TypeError, UnicodeDecodeError) as err:  # pandas' ParserError is a ValueError
        raise ValueError(f"{path} is not a results table written by the report stage: {' '.join(str(err).split())[:300]}") from None
    return frame


# --------------------------------------------------------------------------------------------
# Tables
# --------------------------------------------------------------------------------------------


def mean_sd(mean: float, sd: float, digits: int = 2) -> str:
    """``12.34 ± 0.56``; a single repeat has no sd and shows ``± –``."""
    if pd.isna(mean):
        return ""
    return f"{mean:.{digits}f} ± {'–' if pd.isna(sd) else f'{sd:.{digits}f}'}"


def markdown(table: pd.DataFrame) -> str:
    """A GitHub-flavoured Markdown table of already formatted cells."""
    lines = ["| " + " | ".join(map(str, table.columns)) + " |", "|" + "|".join(" --- " for _ in table.columns) + "|"]
    lines += ["| " + " | ".join("" if pd.isna(v) else str(v) for v in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join(lines)


def _select(results: pd.DataFrame, **conditions) -> pd.DataFrame:
    mask = np.ones(len(results), dtype=bool)
    for column, value in conditions.items():
        mask &= results[column].isin(value if isinstance(value, (list, tuple, set)) else [value]).to_numpy()
    return results[mask]


def _repeats(rows: pd.DataFrame) -> str:
    counts = sorted(set(rows["n"].astype(int)))
    return f"n = {', '.join(map(str, counts))} seed{'s' if counts != [1] else ''}"


def headline_metric(ground_truth: str) -> str:
    """The number Table II shows: mAP@k on labels (the first paper); on neighbours, the tie-aware
    precision at K, K the number of true neighbours (the binary autoencoder paper)."""
    return "map" if ground_truth == "labels" else "tie_aware_p@K"


def hashing_table(results: pd.DataFrame, ground_truth: str, metric: str, quoted: bool = True) -> pd.DataFrame:
    """Table II layout: one row per dataset and method, one "mean ± sd" column per code length;
    Euclidean search on the unhashed features at every length; quoted rows where they apply."""
    rows = _select(results, pipeline=["hashing", "features"], ground_truth=ground_truth, metric=metric)
    bits = sorted(rows.loc[rows["pipeline"] == "hashing", "bits"].dropna().unique())
    out = []
    for (dataset, kind, backbone, method), group in rows.groupby(["dataset", "kind", "backbone", "method"], sort=False):
        cells = {f"{b} bits": mean_sd(r.mean, r.sd) for r in group.itertuples() for b in ([r.bits] if not pd.isna(r.bits) else bits)}
        out.append({"dataset": dataset, "method": method_name(method), "backbone": backbone, **cells})
    if quoted and metric == "map" and ground_truth == "labels":
        for (dataset, kind), _ in rows.groupby(["dataset", "kind"], sort=False):
            for method, group in PUBLISHED[PUBLISHED["kind"] == kind].groupby("method", sort=False):
                cells = {f"{r.bits} bits": ("–" if pd.isna(r.mean) else f"{r.mean:.2f}") for r in group.itertuples() if r.bits in bits}
                out.append({"dataset": dataset, "method": f"{method}, {QUOTED_SOURCE}", "backbone": "", **cells})
    return pd.DataFrame(out, columns=["dataset", "method", "backbone", *[f"{b} bits" for b in bits]])


def metric_learning_table(results: pd.DataFrame, models: list[str]) -> pd.DataFrame:
    """The second paper's results: per dataset and model, precision@10, mAP over the whole
    database, mAP@k (class labels), Holidays mAP where it applies, and search time per query."""
    rows = _select(results, pipeline="metric", ground_truth=["labels", "-"])
    columns = {"p@10": "P@10 (%)", "map_all": "mAP (%)", "tie_aware_map_all": "tie-aware mAP (%)", "map": "mAP@k (%)", "holidays_map": "Holidays mAP (%)", "time_median_ms": "ms per query"}
    out = []
    for (dataset, backbone, method), group in rows.groupby(["dataset", "backbone", "method"], sort=False):
        values = {columns[m]: mean_sd(r.mean, r.sd, 3 if m.endswith("_ms") else 2) for m, r in zip(group["metric"], group.itertuples()) if m in columns}
        out.append({"dataset": dataset, "backbone": backbone, "model": method, **values})
    table = pd.DataFrame(out)
    table["order"] = table["model"].map({m: i for i, m in enumerate(models)})
    ordered = [c for c in ["dataset", "backbone", "model", *columns.values()] if c in table]
    return table.sort_values(["dataset", "backbone", "order"])[ordered].reset_index(drop=True)


def timing_table(results: pd.DataFrame) -> pd.DataFrame:
    """Search time per query (median over queries, ms; mean ± sd over seeds) of every descriptor:
    the second paper's Table 1, extended to the hashing methods."""
    rows = _select(results, metric=["time_median_ms", "time_p95_ms", "ann_time_median_ms"])
    out = []
    for (dataset, pipeline, backbone, method, bits), group in rows.groupby(["dataset", "pipeline", "backbone", "method", "bits"], sort=True, dropna=False):
        values = {m: mean_sd(r.mean, r.sd, 3) for m, r in zip(group["metric"], group.itertuples())}
        out.append({"dataset": dataset, "pipeline": pipeline, "backbone": backbone, "method": method_name(method), "bits": "" if pd.isna(bits) else int(bits), "median ms": values.get("time_median_ms"), "p95 ms": values.get("time_p95_ms"), **({"approximate median ms": values["ann_time_median_ms"]} if "ann_time_median_ms" in values else {})})
    return pd.DataFrame(out)


# --------------------------------------------------------------------------------------------
# Figures
# --------------------------------------------------------------------------------------------


def _plotting():
    """matplotlib (files only, no display) and seaborn, imported when a figure is drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    sns.set_theme(context="paper", style="whitegrid", font_scale=1.1)
    return plt, sns


def _save(figure, path) -> None:
    from cbir.io import atomic_output

    plt, _ = _plotting()
    with atomic_output(path) as tmp:
        figure.savefig(tmp, dpi=150, bbox_inches="tight", format="png")
    plt.close(figure)


def finetune_figure(histories: pd.DataFrame, path) -> None:
    """Fig. 4: training and validation accuracy per epoch (mean and sd band over seeds), one
    panel per dataset and backbone. ``histories`` has columns run, seed and the history's."""
    _, sns = _plotting()
    frames = []
    for column, label in (("train_accuracy", "training"), ("val_accuracy", "validation")):
        part = histories[histories[column].notna()]
        frames.append(pd.DataFrame({"run": part["run"], "seed": part["seed"], "epoch": part["epoch"], "accuracy (%)": 100 * part[column], "set": label}))
    data = pd.concat(frames, ignore_index=True)
    n_runs = data["run"].nunique()
    grid = sns.relplot(data=data, x="epoch", y="accuracy (%)", hue="set", col="run", kind="line", marker="o", errorbar="sd", col_wrap=min(3, n_runs), height=3.2, aspect=1.25, facet_kws={"sharey": False})
    grid.set_titles("{col_name}")
    grid.figure.suptitle(f"Fine-tuning accuracy per epoch (mean ± sd over {data['seed'].nunique()} seeds)", y=1.03)
    _save(grid.figure, path)


def ba_objective_figure(traces: pd.DataFrame, path) -> None:
    """Fig. 5: the binary autoencoder's objective E_Q and the reconstruction error of its hash
    function's own codes per MAC iteration, one colour per code length and one line per seed:
    seeds stop after different numbers of iterations, and a mean over the seeds still running
    would jump where one stops. ``traces`` has columns run, seed, bits and the trace's."""
    plt, sns = _plotting()
    data = traces.assign(bits=traces["bits"].map(lambda b: f"{b} bits"))
    runs = list(dict.fromkeys(data["run"]))
    figure, axes = plt.subplots(2, len(runs), figsize=(4.2 * len(runs), 6.4), squeeze=False)
    for column, run in enumerate(runs):
        subset = data[data["run"] == run]
        for row, y in enumerate(("E_Q", "E_BA")):
            sns.lineplot(data=subset, x="iteration", y=y, hue="bits", units="seed", estimator=None, marker="o", markersize=3, linewidth=1, ax=axes[row, column], legend=row == 0)
        axes[0, column].set(title=run, ylabel="objective E_Q(h, f, Z; μ)", xlabel="")
        axes[1, column].set(ylabel="E_BA: reconstruction error of h(X)\nΣ‖x − f(h(x))‖²", xlabel="MAC iteration (μ changes each iteration)")
        axes[0, column].get_legend().remove()
    # one legend beside the panels: inside, it hides the curves
    handles, labels = axes[0, 0].get_legend_handles_labels()
    figure.suptitle(f"Binary autoencoder training (one line per seed, {data['seed'].nunique()} seeds)", y=1.0)
    figure.tight_layout()
    figure.legend(handles, labels, title="code length", loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    _save(figure, path)


def pr_figure(curves: pd.DataFrame, path, curve: str = "hamming-radius") -> None:
    """Fig. 6: precision-recall curves per code length (Hamming-radius sweep), one panel per
    dataset, ground truth and hashing method; one thin line per seed shows the spread."""
    _, sns = _plotting()
    data = curves[curves["curve"] == curve].dropna(subset=["precision"])
    data = data.assign(
        method=data["method"].map(method_name),
        bits=data["bits"].map(lambda b: f"{b} bits"),
        row=data["dataset"] + " · " + data["ground_truth"].map(GROUND_TRUTH_NAMES),
    )
    grid = sns.relplot(data=data, x="recall", y="precision", hue="bits", col="method", row="row", kind="line", units="seed", estimator=None, sort=False, linewidth=1, height=3.0, aspect=1.1, facet_kws={"sharex": True, "sharey": True})
    grid.set_titles("{row_name} · {col_name}")
    grid.set(xlim=(0, 1.02), ylim=(0, 1.02))
    grid.figure.suptitle("Precision–recall by Hamming radius (one line per seed)", y=1.02)
    _save(grid.figure, path)


def metric_figures(results: pd.DataFrame, curves: pd.DataFrame, models: list[str], precision_path, map_path) -> None:
    """Figs. 8-9 of the second paper: precision at k and mAP of the models per dataset (class
    labels), mean and sd over seeds."""
    _, sns = _plotting()
    data = curves[(curves["curve"] == "top-k") & (curves["cutoff"] <= 100)].assign(precision=lambda f: 100 * f["precision"])
    grid = sns.relplot(data=data, x="cutoff", y="precision", hue="method", hue_order=models, style="method", style_order=models, col="dataset", kind="line", markers=True, dashes=True, errorbar="sd", height=3.4, aspect=1.2)
    grid.set(xscale="log", xlabel="number of images retrieved (k)", ylabel="precision@k (%)")
    grid.set_titles("{col_name}")
    grid.legend.set_title("model")
    _save(grid.figure, precision_path)

    rows = _select(results, pipeline="metric", ground_truth="labels", metric=["map_all", "tie_aware_map_all"])
    long = pd.DataFrame(
        [
            {"dataset": r.dataset, "model": r.method, "measure": {"map_all": "mAP", "tie_aware_map_all": "tie-aware mAP"}[r.metric], "mAP (%)": float(v)}
            for r in rows.itertuples()
            for v in str(r.values).split(";")
        ]
    )
    grid = sns.catplot(data=long, x="model", y="mAP (%)", hue="measure", col="dataset", kind="bar", order=models, errorbar="sd", height=3.4, aspect=1.5)
    grid.set_xticklabels(rotation=35, ha="right")
    grid.set(xlabel="")
    grid.set_titles("{col_name}")
    _save(grid.figure, map_path)


def contact_sheet(rows: list, path, mode: str, title: str) -> None:
    """A grid of images: per row a query and its results.

    ``rows`` holds ``(query image, caption, results)`` with ``results`` a list of
    ``(image, caption, relevant)``; ``relevant`` True frames a result green, False red, None grey.
    """
    plt, _ = _plotting()
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
# The report stage
# --------------------------------------------------------------------------------------------


def run_provenance(run: dict, summaries: list[str]) -> dict:
    """The report's provenance: this run's record, and the distinct commits, devices and versions
    of the jobs that wrote the evaluation files."""
    jobs = [read_metadata(path).get("provenance") for path in summaries]
    jobs = [job for job in jobs if job]

    def distinct(key):
        return sorted({str(job.get(key)) for job in jobs})

    return {
        **run,
        "evaluated_by": {
            "commits": distinct("commit"),
            "dirty": sorted({bool(job.get("dirty")) for job in jobs}),
            "cpus": sorted({f"{job['cpu']['model']} [{' '.join(job['cpu']['isa'])}]" for job in jobs}),
            "gpus": sorted({gpu for job in jobs for gpu in job.get("gpus", [])}),
            "hosts": distinct("host"),
            "first": min((job["time"] for job in jobs), default=None),
            "last": max((job["time"] for job in jobs), default=None),
        },
    }


def _write_markdown(path, title: str, table: pd.DataFrame, note: str, record: dict) -> None:
    from cbir.provenance import describe

    write_text(f"### {title}\n\n{markdown(table)}\n\n{note}\n\nProvenance: {describe(record)}.\n", path)


def write_report(entries, histories, traces, showcases, models: list[str], n_neighbours: int, record: dict, out: dict) -> None:
    """Every table and figure of a configuration.

    ``entries``: the evaluated descriptors (see :func:`collect`) with their ``pr`` curve paths;
    ``histories``/``traces``: dicts with ``run``, ``seed`` (and ``bits``) and ``path`` of the
    fine-tuning histories and BA traces; ``showcases``: per dataset ``ranking``, ``manifest``,
    ``mode``, ``descriptor``; ``record``: this run's provenance; ``out``: output paths by name
    (see workflow/rules/report.smk).
    """
    from cbir.provenance import describe

    metrics = collect(entries)
    record = run_provenance(record, [e["summary"] for e in entries])
    write_text(json.dumps(record, indent=2) + "\n", out["provenance"])
    comments = [f"provenance: {describe(record)}"]
    write_parquet(metrics, out["metrics"], metadata={"provenance": record})
    results = aggregate(metrics)
    write_table(results, out["results"], comments)
    k = int(metrics["k"].max())
    repeats = _repeats(results)

    if "table2" in out:
        ba = _select(results, method="ba", metric=["map", "tie_aware_map", "tie_aware_p@K"])
        write_table(ba, out["table1"], comments)
        shown = ba.assign(value=[mean_sd(m, s) for m, s in zip(ba["mean"], ba["sd"])])
        shown = shown.pivot_table(index=["dataset", "backbone", "ground_truth", "metric"], columns="bits", values="value", aggfunc="first").reset_index()
        shown.columns = [f"{c} bits" if isinstance(c, (int, np.integer)) else c for c in shown.columns]
        _write_markdown(out["table1_md"], f"Table I: binary autoencoder (mean ± sd, {repeats})", shown, f"`map`: mAP@{k}; `tie_aware_map`: its expectation over random orders of tied items; `tie_aware_p@K`: tie-aware precision at K = {n_neighbours}, the number of true neighbours.", record)
        parts, texts = [], []
        for ground_truth in ("labels", "neighbours"):
            metric = headline_metric(ground_truth)
            table = hashing_table(results, ground_truth, metric)
            if len(table):
                parts.append(_select(results, pipeline=["hashing", "features"], ground_truth=ground_truth, metric=metric))
                name = f"mAP@{k}" if metric == "map" else f"tie-aware precision@{n_neighbours}"
                texts.append(f"Ground truth: {GROUND_TRUTH_NAMES[ground_truth]} — {name} (%), mean ± sd ({repeats}):\n\n{markdown(table)}")
        write_table(pd.concat(parts, ignore_index=True), out["table2"], comments)
        note = (
            f"Class labels: the first paper's protocol (mAP@{k}); Euclidean neighbours: a query's {n_neighbours} nearest database items by "
            "Euclidean distance in the float feature space the hashers were trained on, the binary autoencoder paper's protocol. Rows marked quoted are copied from the first paper's Table II "
            "(other features; CNNH/CNNH+ under another protocol), for orientation only."
        )
        write_text("### Table II: hashing methods\n\n" + "\n\n".join(texts) + f"\n\n{note}\n\nProvenance: {describe(record)}.\n", out["table2_md"])
        runs = pd.concat([read_parquet(h["path"]).assign(run=h["run"], seed=h["seed"]) for h in histories], ignore_index=True)
        finetune_figure(runs, out["fig4"])
        curves = pd.concat([read_parquet(e["pr"]).assign(seed=e["seed"], dataset=e["dataset"], **parse_descriptor(e["descriptor"])) for e in entries if e["descriptor"].startswith("hashing/")], ignore_index=True)
        pr_figure(curves, out["fig6"])
    if "fig5" in out:
        frames = [pd.read_csv(t["path"], sep="\t", comment="#").assign(run=t["run"], seed=t["seed"], bits=t["bits"]) for t in traces]
        ba_objective_figure(pd.concat([f for f in frames if len(f)], ignore_index=True), out["fig5"])
    if "table_metric" in out:
        table = metric_learning_table(results, models)
        write_table(_select(results, pipeline="metric"), out["table_metric"], comments)
        _write_markdown(out["table_metric_md"], f"Siamese and triplet models (class labels; mean ± sd, {repeats})", table, f"mAP over the whole ranked database and mAP@{k}; search time per query in ms.", record)
        curves = pd.concat([read_parquet(e["pr"]).assign(seed=e["seed"], dataset=e["dataset"], method=parse_descriptor(e["descriptor"])["method"]) for e in entries if e["descriptor"].startswith("metric/")], ignore_index=True)
        metric_figures(results, curves[curves["ground_truth"] == "labels"], models, out["fig8"], out["fig9"])
    timing = timing_table(results)
    write_table(_select(results, ground_truth="-"), out["timing"], comments)
    _write_markdown(out["timing_md"], f"Search time per query (ms; median over queries, mean ± sd over seeds, {repeats})", timing, "Exact search, one query at a time on one thread (faiss), including the call overhead.", record)
    from cbir.datasets import read_manifest

    for show in showcases:
        top10_figure(read_parquet(show["ranking"]), read_manifest(show["manifest"]), show["mode"], show["path"], seed=show["seed"], title=f"{show['dataset']}: top 10 by {show['descriptor']}, seed {show['seed']} (green: same class, red: another)")
    log.info("report: %d numbers from %d evaluation files (%s)", len(results), len(entries), repeats)
