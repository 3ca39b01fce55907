"""Measuring an index: per-query latency, and an approximate search's recall of the exact one."""

from __future__ import annotations

import time

import faiss
import numpy as np

from cbir.search.base import check_k

def recall_at_k(
    exact_indices: np.ndarray,
    approx_indices: np.ndarray,
    exact_distances: np.ndarray | None = None,
    approx_distances: np.ndarray | None = None,
) -> float:
    """Mean recall of an approximate top-k against the exact top-k (search quality, not relevance).

    Without distances: the fraction of the exact result's items that the approximate result
    contains, ``|approx ∩ exact| / |exact|`` per query, averaged over queries (``-1`` entries are
    ignored). With many items tied at the k-th distance (common with Hamming distances) this
    under-rates an approximate search that returns *other* items at that same distance.

    With both distance arrays: tie-tolerant recall, where an approximate hit counts if it is at
    least as close as the exact k-th neighbour: per query ``(#approx with d < d_k +
    min(#approx with d == d_k, #exact with d == d_k)) / #exact``, ``d_k`` the exact k-th
    distance. It equals 1 exactly when the approximate result is an exact top-k up to the order
    of tied items.

    Not to be confused with :func:`cbir.metrics.recall_at_k` (relevant items retrieved).
    """
    exact_indices = np.asarray(exact_indices)
    approx_indices = np.asarray(approx_indices)
    if exact_indices.ndim != 2 or approx_indices.ndim != 2 or len(exact_indices) != len(approx_indices):
        raise ValueError(
            f"exact and approximate indices must be 2-D with the same number of queries, got "
            f"{exact_indices.shape} and {approx_indices.shape}"
        )
    if len(exact_indices) == 0:
        raise ValueError("no queries")
    exact_valid = exact_indices >= 0
    n_exact = exact_valid.sum(1)
    if (n_exact == 0).any():
        raise ValueError("every query needs at least one exact result")
    if (exact_distances is None) != (approx_distances is None):
        raise ValueError("give both exact_distances and approx_distances, or neither")
    if exact_distances is None:
        hits = np.array(
            [np.intersect1d(a[a >= 0], e[e >= 0], assume_unique=True).size for a, e in zip(approx_indices, exact_indices)]
        )
        return float(np.mean(hits / n_exact))
    exact_distances = np.asarray(exact_distances)
    approx_distances = np.asarray(approx_distances)
    if exact_distances.shape != exact_indices.shape or approx_distances.shape != approx_indices.shape:
        raise ValueError("distance arrays must have the shapes of their index arrays")
    kth = np.array([d[v][-1] for d, v in zip(exact_distances, exact_valid)])[:, None]
    approx_valid = approx_indices >= 0
    below = (approx_valid & (approx_distances < kth)).sum(1)
    at_approx = (approx_valid & (approx_distances == kth)).sum(1)
    at_exact = (exact_valid & (exact_distances == kth)).sum(1)
    return float(np.mean((below + np.minimum(at_approx, at_exact)) / n_exact))


def time_queries(
    index,
    queries: np.ndarray,
    k: int,
    n_queries: int | None = None,
    seed: int = 0,
    warmup: int = 1,
    n_threads: int | None = None,
) -> np.ndarray:
    """Per-query retrieval times in seconds: each query is searched alone (batch of one).

    ``n_queries`` samples that many queries without replacement (seeded) instead of timing all
    of them; ``warmup`` untimed searches run first. Returns a float64 array with one entry per
    timed query; summarise it with :func:`summarize_query_times` (median, 95th percentile).
    Timings are wall-clock (``time.perf_counter``) and include the Python/faiss call overhead,
    which is what a user of the index pays.

    ``n_threads`` sets faiss's OpenMP thread count for the measurement (restored afterwards);
    ``None`` keeps the current setting. A single binary query runs on one thread anyway, and on
    a machine whose cores are busy with other work, OpenMP's fork/join barriers can add whole
    scheduler time slices (milliseconds) per call, so ``n_threads=1`` (or the environment
    variable ``OMP_WAIT_POLICY=PASSIVE``) gives more meaningful latencies there.
    """
    k = check_k(k)
    queries = np.asarray(queries)
    if queries.ndim != 2 or len(queries) == 0:
        raise ValueError(f"queries must be a non-empty 2-D array, got shape {queries.shape}")
    rows = np.arange(len(queries))
    if n_queries is not None:
        if n_queries < 1:
            raise ValueError(f"n_queries must be positive, got {n_queries}")
        rows = np.sort(np.random.default_rng(seed).choice(len(queries), size=min(n_queries, len(queries)), replace=False))
    if n_threads is not None and (isinstance(n_threads, bool) or not isinstance(n_threads, (int, np.integer)) or n_threads < 1):
        raise ValueError(f"n_threads must be a positive integer or None, got {n_threads!r}")
    previous_threads = faiss.omp_get_max_threads()
    if n_threads is not None:
        faiss.omp_set_num_threads(int(n_threads))
    try:
        for i in range(warmup):
            row = rows[i % len(rows)]
            index.search(queries[row : row + 1], k)
        times = np.empty(len(rows), dtype=np.float64)
        for j, row in enumerate(rows):
            query = queries[row : row + 1]
            start = time.perf_counter()
            index.search(query, k)
            times[j] = time.perf_counter() - start
    finally:
        faiss.omp_set_num_threads(previous_threads)
    return times


def summarize_query_times(times: np.ndarray) -> dict[str, float]:
    """``n``, ``median_s``, ``p95_s``, ``mean_s`` and ``max_s`` of per-query times."""
    times = np.asarray(times, dtype=np.float64)
    if times.ndim != 1 or len(times) == 0:
        raise ValueError("times must be a non-empty 1-D array")
    return {
        "n": int(len(times)),
        "median_s": float(np.median(times)),
        "p95_s": float(np.percentile(times, 95)),
        "mean_s": float(times.mean()),
        "max_s": float(times.max()),
    }
