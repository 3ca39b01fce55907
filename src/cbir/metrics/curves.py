"""Precision-recall curves: by number retrieved, and for binary codes by Hamming radius."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd

from cbir.metrics._common import _as_rel, _check_pair, _safe_divide
from cbir.metrics.ranking import precision_at_k, recall_at_k


def distance_histograms(distances: np.ndarray, relevant: np.ndarray, max_distance: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-query counts of relevant and irrelevant database items at each distance 0..max_distance.

    ``distances`` are integers in ``[0, max_distance]`` (Hamming distances, ``max_distance`` =
    number of bits). Returns ``(relevant_counts, irrelevant_counts)``, both (Q, max_distance + 1)
    int64. Histograms of database chunks can simply be added.
    """
    distances, relevant = _check_pair(distances, relevant)
    if distances.dtype.kind not in "iu":
        raise ValueError(f"distance histograms need integer distances, got dtype {distances.dtype}")
    if distances.min() < 0 or distances.max() > max_distance:
        raise ValueError(f"distances must lie in [0, {max_distance}]")
    n_queries = len(distances)
    width = int(max_distance) + 1
    flat = (np.arange(n_queries, dtype=np.int64)[:, None] * width + distances).ravel()
    rel_flat = relevant.ravel()
    size = n_queries * width
    relevant_counts = np.bincount(flat[rel_flat], minlength=size).reshape(n_queries, width)
    irrelevant_counts = np.bincount(flat[~rel_flat], minlength=size).reshape(n_queries, width)
    return relevant_counts.astype(np.int64), irrelevant_counts.astype(np.int64)


def pr_curve_by_radius(
    relevant_counts: np.ndarray,
    irrelevant_counts: np.ndarray,
    empty: str = "skip",
    zero_division: float = 0.0,
) -> pd.DataFrame:
    """Precision and recall of Hamming-ball retrieval (distance <= radius), averaged over queries.

    Inputs are the histograms of :func:`distance_histograms`. At radius ``r`` a query retrieves
    every item at distance ``<= r``; its precision is relevant retrieved / retrieved and its
    recall relevant retrieved / all relevant (``zero_division`` when it has no relevant item).

    Precision is undefined for a query that retrieves nothing. ``empty="skip"`` (default) leaves
    such queries out of the precision mean at that radius (NaN if no query retrieves anything);
    ``empty="zero"`` counts their precision as 0, the convention of the "precision within Hamming
    radius 2" evaluations of the hashing literature (KSH, SDH and their successors), which
    penalises codes that leave the Hamming ball empty. Recall is always defined (0 retrieved
    gives recall 0). The column ``retrieving`` is the fraction of queries that retrieve at least
    one item, and ``retrieved`` the mean number retrieved.

    Returns a DataFrame with columns ``radius, precision, recall, retrieving, retrieved``.
    """
    rel_c = np.asarray(relevant_counts)
    irr_c = np.asarray(irrelevant_counts)
    if rel_c.ndim != 2 or rel_c.shape != irr_c.shape or rel_c.shape[0] == 0:
        raise ValueError(f"histograms must be non-empty 2-D arrays of the same shape, got {rel_c.shape} and {irr_c.shape}")
    if empty not in ("skip", "zero"):
        raise ValueError(f"empty must be 'skip' or 'zero', got {empty!r}")
    cum_rel = np.cumsum(rel_c, axis=1, dtype=np.float64)
    cum_all = cum_rel + np.cumsum(irr_c, axis=1, dtype=np.float64)
    n_relevant = cum_rel[:, -1:]
    recall = _safe_divide(cum_rel, n_relevant, zero_division).mean(0)
    retrieved_any = cum_all > 0
    precision_q = _safe_divide(cum_rel, cum_all, 0.0)
    if empty == "zero":
        precision = precision_q.mean(0)
    else:
        n_defined = retrieved_any.sum(0)
        precision = np.full(rel_c.shape[1], np.nan)
        np.divide(precision_q.sum(0), n_defined, out=precision, where=n_defined > 0)
    retrieving = retrieved_any.mean(0)
    return pd.DataFrame(
        {
            "radius": np.arange(rel_c.shape[1]),
            "precision": precision,
            "recall": recall,
            "retrieving": retrieving,
            "retrieved": cum_all.mean(0),
        }
    )


def pr_curve_by_k(
    rel: np.ndarray,
    n_relevant: np.ndarray,
    ks: Iterable[int],
    zero_division: float = 0.0,
) -> pd.DataFrame:
    """Precision@k and recall@k for each ``k`` in ``ks``, averaged over queries.

    ``rel`` is the (Q, K) ranked relevance (K >= max(ks), or the whole database if smaller: ``k``
    is then clamped as in :func:`precision_at_k`; the ``k`` column keeps the requested value).
    Returns a DataFrame with columns ``k, precision, recall``.
    """
    rel = _as_rel(rel)
    if len(rel) == 0:
        raise ValueError("no queries")
    ks = [int(k) for k in ks]
    if not ks:
        raise ValueError("ks is empty")
    rows = [
        {
            "k": k,
            "precision": float(precision_at_k(rel, k).mean()),
            "recall": float(recall_at_k(rel, n_relevant, k, zero_division).mean()),
        }
        for k in ks
    ]
    return pd.DataFrame(rows, columns=["k", "precision", "recall"])
