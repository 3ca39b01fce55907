"""Neighbour-retrieval precision of binary codes, for the binary autoencoder's validation rollback
and the hashing benchmark.

The ground truth is the K Euclidean nearest neighbours in feature space
(:func:`cbir.metrics.neighbour_relevance`); codes rank the database by Hamming distance, where
ties are the rule (L + 1 possible distances), so precision@K is taken tie-aware: its expectation
when the items at equal distance are ordered uniformly at random.
"""

from __future__ import annotations

import numpy as np


def hamming_distances(query_bits: np.ndarray, database_bits: np.ndarray) -> np.ndarray:
    """(Q, N) int32 Hamming distances between rows of 0/1 arrays, by one float32 matmul
    (exact: the integer dot products are far below float32's 2^24)."""
    q = query_bits.astype(np.float32) * 2 - 1
    d = database_bits.astype(np.float32) * 2 - 1
    return np.rint((q.shape[1] - q @ d.T) / 2).astype(np.int32)


def tie_aware_precision_at_k(distances: np.ndarray, relevant: np.ndarray, k: int) -> np.ndarray:
    """(Q,) expected precision@k over uniformly random orders of equal distances.

    ``distances`` are non-negative integers (Q, N), ``relevant`` (Q, N) bool. The items strictly
    closer than the k-th distance d* are all retrieved; of the group at d*, the k - (items closer)
    remaining slots hold r/n relevant items on average (r relevant among its n items).
    """
    distances = np.asarray(distances)
    relevant = np.asarray(relevant, dtype=bool)
    if distances.shape != relevant.shape or distances.ndim != 2:
        raise ValueError(f"distances and relevant must be 2-D of one shape, got {distances.shape} and {relevant.shape}")
    n_queries, n_items = distances.shape
    k = min(int(k), n_items)
    if k < 1:
        raise ValueError(f"k must be positive, got {k}")
    span = int(distances.max()) + 1
    flat = (np.arange(n_queries)[:, None] * span + distances).ravel()
    n = np.bincount(flat, minlength=n_queries * span).reshape(n_queries, span)
    r = np.bincount(flat[relevant.ravel()], minlength=n_queries * span).reshape(n_queries, span)
    before = np.cumsum(n, axis=1) - n  # items strictly closer than each distance
    inside = np.clip(k - before, 0, n)  # slots of the top k that each distance group fills
    expected = (r * np.divide(inside, n, out=np.zeros(n.shape), where=n > 0)).sum(axis=1)
    return expected / k
