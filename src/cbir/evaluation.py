"""The evaluation stage: search a descriptor file's queries in its database once, and score them.

``evaluate`` computes the full query-database distances (exact, chunked over queries) and from
them the top-k ranking (ties by database position, as faiss orders them), every metric and the
precision-recall curves, under each ground truth:

``labels``      a database image is relevant when it has the query's class (the first paper's
                mAP@1000, the second paper's precision and mAP); on multi-label data, when it
                shares at least one class with the query (NUS-WIDE's and MS-COCO's protocol in
                the hashing literature: mAP@k then is DeepHash-pytorch's ``CalcTopMap``);
``neighbours``  a database image is relevant when it is among the query's K nearest by
                Euclidean distance in the float feature space the hasher was trained on (the
                binary autoencoder paper's protocol: what unsupervised hashing is built to keep).

It also times single-query searches (one thread), the latency a user sees.
"""

from __future__ import annotations

import logging
from dataclasses import replace

import numpy as np
import pandas as pd

from cbir.io import Descriptors, read_descriptors, write_parquet
from cbir.metrics import (
    average_precision_at_k,
    distance_histograms,
    neighbour_relevance,
    pr_curve_by_k,
    pr_curve_by_radius,
    precision_at_k,
    relevance_from_labels,
    score_ap_from_ranks_1,
    tie_aware_ap_from_groups,
    tie_aware_precision_from_groups,
    tie_groups,
    top_k_by_distance,
)
from cbir.metrics import recall_at_k as recall_in_top_k
from cbir.preprocess import apply_preprocessing, fit_preprocessing
from cbir.search import make_index, recall_at_k, summarize_query_times, time_queries

log = logging.getLogger(__name__)

GROUND_TRUTHS = ("labels", "neighbours")
PRECISION_AT = (1, 5, 10, 20, 50, 100)
PR_KS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000)
CHUNK_ENTRIES = 1 << 26  # (queries x database) entries per chunk of queries, at most


def load(path) -> tuple[Descriptors, Descriptors, Descriptors]:
    """A descriptor file and its database and query subsets; both must be non-empty."""
    descriptors = read_descriptors(path)
    database, queries = descriptors.subset("database"), descriptors.subset("query")
    if not len(database) or not len(queries):
        raise ValueError(f"{path} has {len(database)} database and {len(queries)} query rows; both are needed")
    return descriptors, database, queries


def reference_space(reference_path, preprocess: str) -> Descriptors:
    """The reference features in the space the hashers were trained on (preprocessing fitted on
    their training rows): read once for every code file of an evaluation job."""
    reference = read_descriptors(reference_path)
    if reference.is_binary:
        raise ValueError(f"{reference_path} holds binary codes, not features")
    params = fit_preprocessing(preprocess, reference.values[reference.train])
    return replace(reference, values=apply_preprocessing(params, reference.values))


def _aligned(descriptors: Descriptors, reference: Descriptors, reference_path) -> np.ndarray:
    """The reference space's rows in the order of ``descriptors``."""
    if not np.array_equal(reference.image_id, descriptors.image_id):
        position = pd.Series(np.arange(len(reference)), index=reference.image_id)
        missing = set(descriptors.image_id) - set(reference.image_id)
        if missing:
            raise ValueError(f"{reference_path} lacks images of the descriptor file: {sorted(missing)[:5]}")
        reference = reference.subset_rows(position.loc[descriptors.image_id].to_numpy())
    return reference.values


def evaluate_all(descriptor_paths, outputs: list[dict], k: int, *, reference_path=None, preprocess: str = "l2", **options) -> list[pd.DataFrame]:
    """:func:`evaluate` for several descriptor files (``outputs`` in their order), reading the
    reference features of the neighbours ground truth, when given, once for all of them."""
    if len(outputs) != len(descriptor_paths):
        raise ValueError(f"{len(descriptor_paths)} descriptor files but {len(outputs)} sets of outputs")
    reference = reference_space(reference_path, preprocess) if reference_path is not None else None
    return [evaluate(path, out, k, reference=reference, reference_path=reference_path, **options) for path, out in zip(descriptor_paths, outputs)]


def evaluate(
    descriptor_path,
    outputs: dict,
    k: int,
    *,
    reference_path=None,
    reference: Descriptors | None = None,
    preprocess: str = "l2",
    n_neighbours: int = 50,
    holidays: bool = False,
    approximate: bool = False,
    n_timed: int = 200,
    chunk_size: int | None = None,
    provenance: dict | None = None,
) -> pd.DataFrame:
    """Rank, time and score the queries of a descriptor file; write ``outputs``.

    ``outputs`` maps ``ranking``, ``timing``, ``per_query``, ``summary`` and ``pr`` to paths.
    With ``reference_path`` (the float features the descriptors were computed from) the
    ``neighbours`` ground truth is scored beside ``labels``; ``reference`` is that file already
    read by :func:`reference_space` (else it is read here). Per query and ground truth: AP@k
    (the hashing literature's convention) and its tie-aware version, AP over the whole database,
    precision at 1..100 (conventional and tie-aware), recall@k, and for Holidays the official AP.
    """
    descriptors, database, queries = load(descriptor_path)
    index = make_index(database.values, n_bits=descriptors.n_bits)
    k = min(k, len(database))
    if descriptors.is_multilabel:
        targets = descriptors.targets()
        q_targets, d_targets = targets[descriptors.query], targets[descriptors.database]
        relevance = {"labels": lambda rows: relevance_from_labels(q_targets[rows], d_targets)}
    else:
        relevance = {"labels": lambda rows: queries.label[rows, None] == database.label[None, :]}
    if reference_path is not None:
        if reference is None:
            reference = reference_space(reference_path, preprocess)
        space = _aligned(descriptors, reference, reference_path)
        q_space, d_space = space[descriptors.query], space[descriptors.database]
        relevance["neighbours"] = lambda rows: neighbour_relevance(q_space[rows], d_space, n_neighbours)

    parts, rankings, ranked, histograms = [], [], {gt: [] for gt in relevance}, {gt: [] for gt in relevance}
    # Queries are scored a chunk at a time against the whole database: a few (chunk x database)
    # matrices. By default a chunk holds 256 queries, fewer for a large database (64 at 1,000,000
    # items), so those matrices stay near 2^26 entries; every metric is per query, so the chunk
    # size does not change a number.
    chunk_size = chunk_size or max(1, min(256, CHUNK_ENTRIES // len(database)))
    # The ids as pandas string arrays: the ranking's columns are taken from them without converting
    # a million Python strings.
    query_ids, database_ids = pd.Series(queries.image_id).array, pd.Series(database.image_id).array
    for start in range(0, len(queries), chunk_size):
        rows = np.arange(start, min(start + chunk_size, len(queries)))
        distances = index.pairwise(queries.values[rows])
        order = top_k_by_distance(distances, None)
        top = order[:, :k]
        relevant = {gt: relevant_of(rows) for gt, relevant_of in relevance.items()}
        rankings.append(
            pd.DataFrame(
                {
                    "query_id": query_ids.take(np.repeat(rows, k)),
                    "rank": np.tile(np.arange(1, k + 1), len(rows)),
                    "image_id": database_ids.take(top.ravel()),
                    "distance": np.take_along_axis(distances, top, axis=1).ravel(),
                    "relevant": np.take_along_axis(relevant["labels"], top, axis=1).ravel(),
                }
            )
        )
        for gt, rel in relevant.items():
            parts.append(_per_query(distances, rel, order, k, n_neighbours, holidays).assign(query_id=queries.image_id[rows], ground_truth=gt))
            ranked[gt].append(np.take_along_axis(rel, order[:, : max(PR_KS)], axis=1))
            if descriptors.is_binary:
                histograms[gt].append(distance_histograms(distances, rel, descriptors.n_bits))
        log.info("evaluated %d/%d queries", rows[-1] + 1, len(queries))

    write_parquet(pd.concat(rankings, ignore_index=True), outputs["ranking"])
    per_query = pd.concat(parts, ignore_index=True)
    write_parquet(per_query, outputs["per_query"])
    write_parquet(_curves(ranked, histograms, per_query, len(database)), outputs["pr"])
    timing = _timing(index, descriptors, database, queries, k, n_timed, approximate)
    write_parquet(timing, outputs["timing"])

    metrics = per_query.drop(columns=["query_id", "n_relevant"]).groupby("ground_truth", sort=False).mean()
    summary = metrics.reset_index().assign(
        k=k,
        n_queries=len(queries),
        n_database=len(database),
        n_bits=descriptors.n_bits,
        dim=None if descriptors.is_binary else database.values.shape[1],
        n_neighbours=n_neighbours,
    )
    write_parquet(summary, outputs["summary"], metadata={"provenance": provenance} if provenance else None)
    for row in summary.to_dict("records"):
        log.info("%s: mAP@%d %.4f (tie-aware %.4f), mAP %.4f, P@10 %.4f", row["ground_truth"], k, row["map"], row["tie_aware_map"], row["map_all"], row["p@10"])
    return summary


def _per_query(distances, relevant, order, k, n_neighbours, holidays) -> pd.DataFrame:
    """Every per-query metric of one chunk under one relevance matrix; ``p@K`` is the precision
    at K = ``n_neighbours``, the neighbours ground truth's headline. The rows are ranked and
    their tie groups counted once for all the metrics (what :func:`cbir.metrics.evaluate_distances` gives at
    k and over the whole database, and the precisions)."""
    cutoffs = [*PRECISION_AT, n_neighbours]
    names = [*map(str, PRECISION_AT), "K"]
    n_items = distances.shape[1]
    n_relevant = relevant.sum(1)
    rel_ranked = np.take_along_axis(relevant, order, axis=1)
    groups = tie_groups(distances, relevant, order)
    tie_aware_p = tie_aware_precision_from_groups(*groups, cutoffs)
    frame = pd.DataFrame(
        {
            "n_relevant": n_relevant.astype(np.int64),
            "map": average_precision_at_k(rel_ranked[:, :k], k, n_relevant),
            "tie_aware_map": tie_aware_ap_from_groups(*groups, k),
            "map_all": average_precision_at_k(rel_ranked, n_items, n_relevant),
            "tie_aware_map_all": tie_aware_ap_from_groups(*groups, n_items),
            "recall": recall_in_top_k(rel_ranked[:, :k], n_relevant, k),
            **{f"p@{name}": precision_at_k(rel_ranked, p) for name, p in zip(names, cutoffs)},
            **{f"tie_aware_p@{name}": tie_aware_p[:, j] for j, name in enumerate(names)},
        }
    )
    if holidays:
        frame["holidays_map"] = [score_ap_from_ranks_1(np.flatnonzero(row), int(row.sum())) if row.any() else 0.0 for row in rel_ranked]
    return frame


def _curves(ranked, histograms, per_query, n_database) -> pd.DataFrame:
    """Precision-recall by number retrieved and, for codes, by Hamming radius, per ground truth."""
    ks = [k for k in PR_KS if k <= n_database]
    curves = []
    for gt, parts in ranked.items():
        n_relevant = per_query.loc[per_query["ground_truth"] == gt, "n_relevant"].to_numpy()
        by_k = pr_curve_by_k(np.concatenate(parts), n_relevant, ks).rename(columns={"k": "cutoff"})
        curves.append(by_k.assign(curve="top-k", ground_truth=gt))
        if histograms[gt]:
            by_radius = pr_curve_by_radius(np.concatenate([h[0] for h in histograms[gt]]), np.concatenate([h[1] for h in histograms[gt]]))
            curves.append(by_radius[["radius", "precision", "recall"]].rename(columns={"radius": "cutoff"}).assign(curve="hamming-radius", ground_truth=gt))
    return pd.concat(curves, ignore_index=True)[["ground_truth", "curve", "cutoff", "precision", "recall"]]


def _timing(index, descriptors, database, queries, k, n_timed, approximate) -> pd.DataFrame:
    """Queries searched one at a time on one thread: the latency a user sees for a single query.

    With ``approximate``, binary codes are also searched with multi-index hashing (the hashing
    paper's ANN option), timed the same way, with its recall@k against the exact search.
    """
    times = time_queries(index, queries.values, k, n_queries=n_timed, n_threads=1)
    timing = [pd.DataFrame({"index": "exact", "query": np.arange(len(times)), "seconds": times, "recall_at_k": 1.0})]
    summary = summarize_query_times(times)
    log.info(
        "searched %d queries in %d %s: median %.3f ms, p95 %.3f ms per query",
        len(queries), len(database), f"{descriptors.n_bits}-bit codes" if descriptors.is_binary else f"{database.values.shape[1]}-d descriptors",
        1e3 * summary["median_s"], 1e3 * summary["p95_s"],
    )
    if approximate and descriptors.is_binary:
        exact = index.search(queries.values, k)[1]
        ann = make_index(database.values, n_bits=descriptors.n_bits, approximate=True)
        recall = recall_at_k(exact, ann.search(queries.values, k)[1])
        ann_times = time_queries(ann, queries.values, k, n_queries=n_timed, n_threads=1)
        timing.append(pd.DataFrame({"index": "approximate", "query": np.arange(len(ann_times)), "seconds": ann_times, "recall_at_k": recall}))
        log.info("approximate search (%r): recall@%d %.4f, median %.3f ms per query", ann, k, recall, 1e3 * np.median(ann_times))
    return pd.concat(timing, ignore_index=True)
