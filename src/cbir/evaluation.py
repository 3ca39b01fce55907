"""The retrieval and evaluation stages: search a descriptor file's queries in its database.

``retrieve`` writes each query's top-k ranking and the per-query search time; ``evaluate``
computes every metric from the full query-database distances (exact, chunked over queries), with
ties ordered as the search orders them (by distance, then database position).
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from cbir.io import Descriptors, read_descriptors, write_parquet
from cbir.metrics import (
    distance_histograms,
    evaluate_distances,
    pr_curve_by_k,
    pr_curve_by_radius,
    precision_at_k,
    score_ap_from_ranks_1,
    top_k_by_distance,
)
from cbir.search import make_index, recall_at_k, summarize_query_times, time_queries

log = logging.getLogger(__name__)

PRECISION_AT = (1, 5, 10, 20, 50, 100)
PR_KS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000)


def load(path) -> tuple[Descriptors, Descriptors, Descriptors]:
    """A descriptor file and its database and query subsets; both must be non-empty."""
    descriptors = read_descriptors(path)
    database, queries = descriptors.subset("database"), descriptors.subset("query")
    if not len(database) or not len(queries):
        raise ValueError(f"{path} has {len(database)} database and {len(queries)} query rows; both are needed")
    return descriptors, database, queries


def retrieve(descriptor_path, ranking_path, timing_path, k: int, n_timed: int = 200, approximate: bool = False) -> pd.DataFrame:
    """Top-``k`` results of every query (exact search), and search time per query.

    With ``approximate``, binary codes are also searched with multi-index hashing (the hashing
    paper's ANN option); its per-query times and recall@k against the exact search join the
    timing table (rows with ``index`` = ``approximate``).
    """
    descriptors, database, queries = load(descriptor_path)
    index = make_index(database.values, n_bits=descriptors.n_bits)
    k = min(k, len(database))
    distances, indices = index.search(queries.values, k)
    ranking = pd.DataFrame(
        {
            "query_id": np.repeat(queries.image_id, k),
            "rank": np.tile(np.arange(1, k + 1), len(queries)),
            "image_id": database.image_id[indices.ravel()],
            "distance": distances.ravel(),
            "relevant": (database.label[indices] == queries.label[:, None]).ravel(),
        }
    )
    write_parquet(ranking, ranking_path)
    # Queries searched one at a time on one thread: the latency a user sees for a single query.
    times = time_queries(index, queries.values, k, n_queries=n_timed, n_threads=1)
    summary = summarize_query_times(times)
    timing = [pd.DataFrame({"index": "exact", "query": np.arange(len(times)), "seconds": times, "recall_at_k": 1.0})]
    if approximate and descriptors.is_binary:
        ann = make_index(database.values, n_bits=descriptors.n_bits, approximate=True)
        recall = recall_at_k(indices, ann.search(queries.values, k)[1])
        ann_times = time_queries(ann, queries.values, k, n_queries=n_timed, n_threads=1)
        timing.append(pd.DataFrame({"index": "approximate", "query": np.arange(len(ann_times)), "seconds": ann_times, "recall_at_k": recall}))
        log.info("approximate search (%r): recall@%d %.4f, median %.3f ms per query", ann, k, recall, 1e3 * np.median(ann_times))
    write_parquet(pd.concat(timing, ignore_index=True), timing_path)
    log.info(
        "searched %d queries in %d %s: median %.3f ms, p95 %.3f ms per query",
        len(queries), len(database), f"{descriptors.n_bits}-bit codes" if descriptors.is_binary else f"{database.values.shape[1]}-d descriptors",
        1e3 * summary["median_s"], 1e3 * summary["p95_s"],
    )
    return ranking


def evaluate(descriptor_path, per_query_path, summary_path, pr_path, k: int, holidays: bool = False, chunk_size: int = 256) -> pd.DataFrame:
    """Per-query metrics, their means, and precision-recall curves.

    Per query: AP@k (hashing convention) and tie-aware AP@k, AP over the whole database,
    precision at 1..100, recall@k, and for Holidays the official AP (trapezoid rule).
    """
    descriptors, database, queries = load(descriptor_path)
    index = make_index(database.values, n_bits=descriptors.n_bits)
    n_bits = descriptors.n_bits
    parts, histograms, ranked = [], [], []
    for start in range(0, len(queries), chunk_size):
        stop = min(start + chunk_size, len(queries))
        distances = index.pairwise(queries.values[start:stop])
        relevant = queries.label[start:stop, None] == database.label[None, :]
        at_k = evaluate_distances(distances, relevant, k)
        whole = evaluate_distances(distances, relevant, None)
        order = top_k_by_distance(distances, None)
        rel_ranked = np.take_along_axis(relevant, order, axis=1)
        part = pd.DataFrame(
            {
                "query_id": queries.image_id[start:stop],
                "label": queries.label[start:stop],
                "n_relevant": at_k["n_relevant"].to_numpy(),
                "ap": at_k["ap"].to_numpy(),
                "tie_aware_ap": at_k["tie_aware_ap"].to_numpy(),
                "ap_all": whole["ap"].to_numpy(),
                "tie_aware_ap_all": whole["tie_aware_ap"].to_numpy(),
                "recall": at_k["recall"].to_numpy(),
                **{f"p@{p}": precision_at_k(rel_ranked, p) for p in PRECISION_AT},
            }
        )
        if holidays:
            part["holidays_ap"] = [score_ap_from_ranks_1(np.flatnonzero(row), int(row.sum())) if row.any() else 0.0 for row in rel_ranked]
        parts.append(part)
        ranked.append(rel_ranked[:, : max(PR_KS)])
        if n_bits is not None:
            histograms.append(distance_histograms(distances, relevant, n_bits))
        log.info("evaluated %d/%d queries", stop, len(queries))
    per_query = pd.concat(parts, ignore_index=True)
    write_parquet(per_query, per_query_path)

    rel_ranked = np.concatenate(ranked)
    ks = [k_ for k_ in PR_KS if k_ <= len(database)]
    curves = [pr_curve_by_k(rel_ranked, per_query["n_relevant"].to_numpy(), ks).assign(curve="top-k").rename(columns={"k": "cutoff"})]
    if histograms:
        by_radius = pr_curve_by_radius(np.concatenate([h[0] for h in histograms]), np.concatenate([h[1] for h in histograms]))
        curves.append(by_radius[["radius", "precision", "recall"]].assign(curve="hamming-radius").rename(columns={"radius": "cutoff"}))
    write_parquet(pd.concat(curves, ignore_index=True)[["curve", "cutoff", "precision", "recall"]], pr_path)

    means = per_query.drop(columns=["query_id", "label", "n_relevant"]).mean()
    summary = pd.DataFrame(
        [
            {
                "k": min(k, len(database)),
                "n_queries": len(queries),
                "n_database": len(database),
                "n_bits": n_bits,
                "dim": None if n_bits is not None else database.values.shape[1],
                "map": means["ap"],
                "tie_aware_map": means["tie_aware_ap"],
                "map_all": means["ap_all"],
                "tie_aware_map_all": means["tie_aware_ap_all"],
                "recall": means["recall"],
                **{f"p@{p}": means[f"p@{p}"] for p in PRECISION_AT},
                **({"holidays_map": means["holidays_ap"]} if holidays else {}),
            }
        ]
    )
    write_parquet(summary, summary_path)
    log.info("mAP@%d %.4f (tie-aware %.4f), mAP %.4f, P@10 %.4f", summary["k"][0], summary["map"][0], summary["tie_aware_map"][0], summary["map_all"][0], summary["p@10"][0])
    return summary
