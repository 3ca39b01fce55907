"""Which database items are relevant to a query: by label (sets) or as its nearest neighbours in
feature space, and the ranked relevance of search results."""

from __future__ import annotations

import numpy as np


def relevance_from_labels(query_labels: np.ndarray, database_labels: np.ndarray) -> np.ndarray:
    """(Q, N) bool relevance from labels.

    1-D labels (single-label datasets): relevant means same label. 2-D multi-hot labels
    (multi-label datasets such as NUS-WIDE): relevant means at least one shared label, the usual
    convention of the hashing literature.
    """
    q = np.asarray(query_labels)
    d = np.asarray(database_labels)
    if q.ndim != d.ndim or q.ndim not in (1, 2) or (q.ndim == 2 and q.shape[1] != d.shape[1]):
        raise ValueError(f"query and database labels must both be 1-D, or 2-D multi-hot of equal width; got {q.shape} and {d.shape}")
    if q.ndim == 1:
        return q[:, None] == d[None, :]
    return (q.astype(np.float32) @ d.astype(np.float32).T) > 0


def neighbour_relevance(query_features: np.ndarray, database_features: np.ndarray, n_neighbours: int) -> np.ndarray:
    """(Q, N) bool: the ``n_neighbours`` nearest database items of each query by Euclidean
    distance in feature space, plus every item tied with the last of them.

    The ground truth of unsupervised hashing (the binary autoencoder's own protocol): a code is
    good if it keeps each point's neighbours in the space it was trained on. Distances are
    computed in float64 from the float32 features, so ties are real ties (duplicated features),
    not float32 rounding. ``n_neighbours`` larger than the database makes every item relevant.
    """
    q = np.asarray(query_features, dtype=np.float64)
    d = np.asarray(database_features, dtype=np.float64)
    if q.ndim != 2 or d.ndim != 2 or q.shape[1] != d.shape[1]:
        raise ValueError(f"query and database features must be 2-D with the same width, got {q.shape} and {d.shape}")
    if isinstance(n_neighbours, bool) or not isinstance(n_neighbours, (int, np.integer)) or n_neighbours < 1:
        raise ValueError(f"n_neighbours must be a positive integer, got {n_neighbours!r}")
    if len(d) == 0:
        raise ValueError("empty database")
    sq = (q**2).sum(1)[:, None] + (d**2).sum(1)[None, :] - 2 * q @ d.T
    n = min(int(n_neighbours), len(d))
    kth = np.partition(sq, n - 1, axis=1)[:, n - 1 : n]
    # float64 rounding of the expanded form is ~1e-16 of the squared norms; equal features must
    # tie whatever BLAS kernel computed their column, so distances this close count as equal.
    tolerance = 1e-9 * (np.abs(q**2).sum(1)[:, None] + np.abs(d**2).sum(1).max())
    return sq <= kth + tolerance


def count_relevant(query_labels: np.ndarray, database_labels: np.ndarray, chunk_size: int = 1024) -> np.ndarray:
    """(Q,) int64 number of relevant database items per query (see :func:`relevance_from_labels`)."""
    q = np.asarray(query_labels)
    d = np.asarray(database_labels)
    if q.ndim == 1 and d.ndim == 1:
        values, counts = np.unique(d, return_counts=True)
        if len(values) == 0:
            return np.zeros(len(q), dtype=np.int64)
        pos = np.searchsorted(values, q).clip(max=len(values) - 1)
        return np.where(values[pos] == q, counts[pos], 0).astype(np.int64)
    out = np.zeros(len(q), dtype=np.int64)
    for s in range(0, len(q), chunk_size):
        out[s : s + chunk_size] = relevance_from_labels(q[s : s + chunk_size], d).sum(1)
    return out


def ranked_relevance(indices: np.ndarray, query_labels: np.ndarray, database_labels: np.ndarray) -> np.ndarray:
    """(Q, k) bool relevance of search results: ``indices[q, i]`` is a database row, ``-1`` = none.

    Missing results (``-1``, from an approximate index) count as not relevant.
    """
    indices = np.asarray(indices)
    q = np.asarray(query_labels)
    d = np.asarray(database_labels)
    if indices.ndim != 2 or len(indices) != len(q):
        raise ValueError(f"indices must be (n_queries, k) with n_queries = {len(q)}, got {indices.shape}")
    if (indices >= len(d)).any() or (indices < -1).any():
        raise ValueError("indices out of range for the database labels")
    valid = indices >= 0
    safe = np.where(valid, indices, 0)
    if q.ndim == 1:
        rel = d[safe] == q[:, None]
    else:
        rel = np.einsum("qkc,qc->qk", d[safe].astype(np.float32), q.astype(np.float32)) > 0
    return rel & valid
