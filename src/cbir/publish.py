"""Published results: the numbers the README quotes, kept as files, and checks against them.

``publish`` copies a finished run's ``results.tsv`` and ``provenance.json`` into
``resources/results/<name>/``; ``render_readme`` rewrites the README's result blocks from those
files (a test checks that the README equals its rendering); ``compare`` holds a user's fresh run
against them, number by number.

A README block is delimited by ``<!-- results NAME TABLE [GROUND_TRUTH] -->`` and
``<!-- end results -->``; TABLE is ``hashing`` (Table II layout, ground truth ``labels`` or
``neighbours``) or ``metric`` (the siamese/triplet models).
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from cbir.config import METRIC_MODEL_ORDER
from cbir.io import atomic_output, read_json, write_text
from cbir.provenance import describe
from cbir.report import GROUND_TRUTH_NAMES, KEYS, hashing_table, headline_metric, markdown, metric_learning_table, read_results

PUBLISHED_DIR = Path("resources/results")
BLOCK = re.compile(r"(<!-- results (?P<spec>[^>]*?) -->\n)(?P<body>.*?)(<!-- end results -->)", re.S)
#: ``cbir compare``'s verdict: a number is reproduced when it lies within this many sd of the published mean.
BAND = 3.0
#: The numbers the tables lead with (and ``compare`` judges by default): mAP@k, its tie-aware
#: version and the whole-database mAP on labels, precision@10, and on neighbours the tie-aware
#: precision at K. The other metrics are listed, and judged with ``all_metrics``.
HEADLINE = ("map", "tie_aware_map", "map_all", "p@10", "tie_aware_p@K")


def publish(report_dir, name: str, to=PUBLISHED_DIR) -> Path:
    """Copy a finished run's results.tsv and provenance.json to ``to/name``."""
    report_dir, target = Path(report_dir), Path(to) / name
    for file in ("results.tsv", "provenance.json"):
        if not (report_dir / file).is_file():
            raise FileNotFoundError(f"missing {report_dir / file}: run the workflow to the end first (snakemake --cores all)")
    target.mkdir(parents=True, exist_ok=True)
    for file in ("results.tsv", "provenance.json"):
        with atomic_output(target / file) as tmp:
            shutil.copyfile(report_dir / file, tmp)
    return target


def _provenance(folder: Path) -> dict:
    return read_json(folder / "provenance.json", "provenance record")


def render_block(spec: str, published=PUBLISHED_DIR) -> str:
    """The Markdown of one README block (see the module docstring)."""
    name, table, *rest = spec.split()
    folder = Path(published) / name
    results = read_results(folder / "results.tsv")
    record = _provenance(folder)
    repeats = ", ".join(map(str, sorted(set(results["n"].astype(int)))))
    if table == "hashing":
        ground_truth = rest[0] if rest else "labels"
        metric = headline_metric(ground_truth)
        k = str(record["evaluation"]["topk"] if metric == "map" else record["evaluation"]["neighbours"])
        shown = hashing_table(results, ground_truth, metric).drop(columns="backbone")
        title = f"{'mAP@' + k if metric == 'map' else 'tie-aware precision@' + k} (%), ground truth: {GROUND_TRUTH_NAMES[ground_truth]}"
    elif table == "metric":
        models = [m for m in METRIC_MODEL_ORDER if m in set(results.loc[results["pipeline"] == "metric", "method"])]
        shown = metric_learning_table(results, models).drop(columns="backbone")
        title = "siamese/triplet models, ground truth: class labels"
    else:
        raise ValueError(f"unknown README block {spec!r}: expected '<name> hashing [labels|neighbours]' or '<name> metric'")
    return (
        f"{title}; mean ± sd over n = {repeats} seeds, from `resources/results/{name}/results.tsv`:\n\n{markdown(shown)}\n\n"
        f"<sub>Provenance: {describe(record)}.</sub>\n"
    )


def render_readme(text: str, published=PUBLISHED_DIR) -> str:
    """``text`` with every results block re-rendered from the published files."""
    return BLOCK.sub(lambda m: m.group(1) + "\n" + render_block(m.group("spec"), published) + "\n" + m.group(4), text)


def update_readme(readme="README.md", published=PUBLISHED_DIR, check: bool = False) -> bool:
    """Re-render the README's results blocks; with ``check``, only tell whether it is current."""
    readme = Path(readme)
    text = readme.read_text()
    rendered = render_readme(text, published)
    if not check and rendered != text:
        write_text(rendered, readme)
    return rendered == text


def _band(published: pd.DataFrame) -> pd.Series:
    """The sd a comparison allows: each number's own sd, but at least the pooled sd of its metric
    (same dataset, pipeline, ground truth and metric) — with two or three seeds one number's sd
    is a poor estimate, and can be 0 by chance."""
    groups = ["dataset", "pipeline", "ground_truth", "metric"]
    pooled = published.groupby(groups)["sd"].transform(lambda s: np.sqrt(np.nanmean(s**2)) if s.notna().any() else np.nan)
    return np.fmax(published["sd"], pooled)


def compare(yours, published, all_metrics: bool = False) -> pd.DataFrame:
    """Every ``published`` number beside ``yours`` (a fresh results.tsv): the published mean ± sd
    (``mean``, ``sd``), yours (``mean_yours``), and whether yours lies outside the published
    mean ± BAND·sd (``outside``).
    Only the HEADLINE metrics are judged unless ``all_metrics``; search times depend on the
    machine and get no verdict."""
    published_results, your_results = read_results(published), read_results(yours)
    if not all_metrics:
        published_results, your_results = (r[r["metric"].isin(HEADLINE) | (r["ground_truth"] == "-")] for r in (published_results, your_results))
    keys = [k for k in KEYS if k != "kind"]
    table = published_results.merge(your_results, on=keys, how="outer", suffixes=("", "_yours"), indicator=True)
    table["allowed_sd"] = _band(table)
    timed = table["ground_truth"] == "-"
    both = table["_merge"] == "both"
    distance = (table["mean_yours"] - table["mean"]).abs()
    table["outside"] = np.where(both & ~timed, distance > BAND * table["allowed_sd"].fillna(0), False)
    table["status"] = np.select(
        [table["_merge"] == "left_only", table["_merge"] == "right_only", timed, table["outside"].astype(bool)],
        ["only published", "only yours", "time (no verdict)", f"OUTSIDE ±{BAND:g} sd"],
        default="inside",
    )
    return table[[*keys, "mean", "sd", "n", "allowed_sd", "mean_yours", "n_yours", "outside", "status"]]


def format_comparison(table: pd.DataFrame, published_record: dict, your_record: dict | None) -> str:
    """The comparison as text: one line per number, then a verdict."""
    shown = table.assign(
        number=table["dataset"] + " " + table["pipeline"] + "/" + table["backbone"] + "/" + table["method"] + table["bits"].map(lambda b: "" if pd.isna(b) else f"/{int(b)}") + " " + table["ground_truth"] + " " + table["metric"],
        published=[f"{m:.2f} ± {s:.2f} (n={int(n)})" if not pd.isna(m) else "" for m, s, n in zip(table["mean"], table["allowed_sd"].fillna(0), table["n"].fillna(0))],
        yours=[f"{m:.2f} (n={int(n)})" if not pd.isna(m) else "" for m, n in zip(table["mean_yours"], table["n_yours"].fillna(0))],
    )[["number", "published", "yours", "status"]]
    judged = table["status"].isin(["inside", f"OUTSIDE ±{BAND:g} sd"])
    outside = int(table["outside"].sum())
    lines = [shown.to_string(index=False), ""]
    lines.append(f"published: {describe(published_record)}")
    if your_record:
        lines.append(f"yours:     {describe(your_record)}")
    lines.append(f"{int(judged.sum()) - outside} of {int(judged.sum())} numbers inside the published mean ± {BAND:g} sd (sd: a number's own, at least its metric's pooled sd); {outside} outside.")
    return "\n".join(lines)
