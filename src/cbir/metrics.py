"""Retrieval metrics: precision/recall, mAP@k (hashing convention), tie-aware AP, PR curves, Holidays AP.

Inputs are numpy arrays, one row per query:

* ``rel`` -- ranked relevance, (Q, k) bool: ``rel[q, i]`` is True when the item at rank ``i``
  (0-based) of query ``q``'s result list is relevant (:func:`ranked_relevance` builds it from
  search indices and labels);
* ``n_relevant`` -- (Q,) number of relevant items in the whole database per query
  (:func:`count_relevant`);
* ``distances`` / ``relevant`` -- full (Q, N) distance rows and relevance over the whole
  database, for the metrics that need every item (tie-aware AP, PR curves by radius).

Conventions (see the README section "Retrieval and evaluation"):

* **AP@k** (:func:`average_precision_at_k`) follows the deep-hashing literature (the evaluation
  code of CNNH, DPSH, HashNet, ...): ``AP@k = (1 / R_k) * sum_{i<=k} P@i * rel_i`` where ``R_k``
  is the number of relevant items *retrieved in the top k*; a query with ``R_k = 0`` scores 0
  and is kept in the mean. Other libraries differ: HashNet's original code drops such queries
  from the mean; "true" AP@k (e.g. ml_metrics ``apk``) divides by ``min(R, k)``; trec_eval's
  ``map_cut_k`` divides by all ``R`` relevant items in the database. All three are available
  through ``normalization=``. Ranks are ordered by (distance, database index), as faiss does.
* **Tie-aware AP@k** (He, Cakir, Bargal & Sclaroff, CVPR 2018): the exact expectation of AP@k
  when items at equal distance are ordered uniformly at random -- independent of the database
  order; see :func:`tie_aware_average_precision_at_k`.
* **mAP over the whole database** (:func:`average_precision`): classic AP, dividing by all
  relevant items (used for Caltech-101); with ``k = N`` the two AP definitions coincide.
* A query with no relevant item: AP = 0 and recall = ``zero_division`` (default 0).
* ``k`` larger than a result list (a database smaller than ``k``) is clamped to the list length.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

__all__ = [
    "NORMALIZATIONS",
    "average_precision",
    "average_precision_at_k",
    "count_relevant",
    "distance_histograms",
    "evaluate_distances",
    "holidays_average_precision",
    "holidays_mean_average_precision",
    "mean_average_precision",
    "mean_average_precision_at_k",
    "neighbour_relevance",
    "pr_curve_by_k",
    "pr_curve_by_radius",
    "precision_at_k",
    "ranked_relevance",
    "recall_at_k",
    "relevance_from_labels",
    "score_ap_from_ranks_1",
    "tie_aware_ap_from_groups",
    "tie_aware_average_precision_at_k",
    "tie_aware_precision_at_k",
    "tie_aware_precision_from_groups",
    "tie_groups",
    "top_k_by_distance",
]

NORMALIZATIONS = ("retrieved", "min", "all")
DEFAULT_K = 1000


# --------------------------------------------------------------------------------------------
# validation helpers


def _as_rel(rel: np.ndarray, name: str = "rel") -> np.ndarray:
    rel = np.asarray(rel)
    if rel.ndim != 2:
        raise ValueError(f"{name} must be a 2-D (n_queries, n_items) array, got shape {rel.shape}")
    if rel.dtype != bool:
        if rel.dtype.kind not in "iuf" or not np.isin(rel, (0, 1)).all():
            raise ValueError(f"{name} must be boolean (or 0/1), got dtype {rel.dtype}")
        rel = rel.astype(bool)
    return rel


def _as_k(k: int | None, width: int) -> int:
    """``k`` clamped to ``width``; ``None`` means the whole list."""
    if k is None:
        return width
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise ValueError(f"k must be a positive integer or None, got {k!r}")
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    return min(int(k), width)


def _as_n_relevant(n_relevant, n_queries: int, hits: np.ndarray | None = None) -> np.ndarray:
    n_relevant = np.asarray(n_relevant)
    if n_relevant.shape != (n_queries,):
        raise ValueError(f"n_relevant must have shape ({n_queries},), got {n_relevant.shape}")
    if n_relevant.dtype.kind not in "iu" and not (n_relevant.dtype.kind == "f" and (n_relevant == np.round(n_relevant)).all()):
        raise ValueError(f"n_relevant must hold integer counts, got dtype {n_relevant.dtype}")
    n_relevant = n_relevant.astype(np.int64)
    if (n_relevant < 0).any():
        raise ValueError("n_relevant must be non-negative")
    if hits is not None and (n_relevant < hits).any():
        raise ValueError("n_relevant is smaller than the number of relevant items retrieved for some query")
    return n_relevant


def _safe_divide(num: np.ndarray, den: np.ndarray, zero_division: float) -> np.ndarray:
    num = np.asarray(num, dtype=np.float64)
    den = np.asarray(den, dtype=np.float64)
    out = np.full(np.broadcast(num, den).shape, float(zero_division))
    np.divide(num, den, out=out, where=den > 0)
    return out


def _check_pair(distances: np.ndarray, relevant: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    distances = np.asarray(distances)
    relevant = _as_rel(relevant, "relevant")
    if distances.ndim != 2 or distances.shape != relevant.shape:
        raise ValueError(f"distances and relevant must be 2-D arrays of the same shape, got {distances.shape} and {relevant.shape}")
    if distances.dtype.kind not in "iuf":
        raise ValueError(f"distances must be numeric, got dtype {distances.dtype}")
    if distances.dtype.kind == "f" and np.isnan(distances).any():
        raise ValueError("distances contain NaN")
    if distances.shape[1] == 0:
        raise ValueError("empty database: distances have no columns")
    return distances, relevant


# --------------------------------------------------------------------------------------------
# relevance


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


# --------------------------------------------------------------------------------------------
# precision, recall, AP from ranked relevance


def precision_at_k(rel: np.ndarray, k: int | None = None) -> np.ndarray:
    """(Q,) precision in the top ``k``: relevant retrieved / k.

    ``k=None`` uses the whole list; ``k`` beyond the list length (database smaller than k) is
    clamped to it, i.e. precision is relevant retrieved / items retrieved.
    """
    rel = _as_rel(rel)
    k = _as_k(k, rel.shape[1])
    if k == 0:
        raise ValueError("empty result lists")
    return rel[:, :k].sum(1) / k


def recall_at_k(rel: np.ndarray, n_relevant: np.ndarray, k: int | None = None, zero_division: float = 0.0) -> np.ndarray:
    """(Q,) recall in the top ``k``: relevant retrieved / relevant items in the whole database.

    A query with no relevant item in the database gets ``zero_division`` (default 0, as
    scikit-learn; pass ``np.nan`` to leave such queries out of a ``np.nanmean``). ``k`` as in
    :func:`precision_at_k`.
    """
    rel = _as_rel(rel)
    k = _as_k(k, rel.shape[1])
    hits = rel[:, :k].sum(1)
    n_relevant = _as_n_relevant(n_relevant, len(rel), hits)
    return _safe_divide(hits, n_relevant, zero_division)


def average_precision_at_k(
    rel: np.ndarray,
    k: int | None = DEFAULT_K,
    n_relevant: np.ndarray | None = None,
    normalization: str = "retrieved",
) -> np.ndarray:
    """(Q,) AP@k of ranked relevance lists, ``sum_{i<=k} P@i * rel_i / denominator``.

    ``normalization`` picks the denominator:

    * ``"retrieved"`` (default, the hashing literature: CNNH/DPSH/HashNet evaluation code):
      ``R_k``, the relevant items within the top k;
    * ``"min"``: ``min(R, k)`` with ``R`` = ``n_relevant``, relevant items in the whole database
      ("true" AP@k, e.g. ml_metrics ``apk``): 1 only if the top k are as good as possible;
    * ``"all"``: ``R`` (trec_eval ``map_cut``; with ``k = N`` this is the classic full AP).

    ``"min"`` and ``"all"`` need ``n_relevant``. A zero denominator gives AP 0 (the query
    stays in the mean). ``k=None`` uses the whole list; larger ``k`` is clamped to it.
    """
    rel = _as_rel(rel)
    k = _as_k(k, rel.shape[1])
    if normalization not in NORMALIZATIONS:
        raise ValueError(f"unknown normalization {normalization!r}; expected one of {NORMALIZATIONS}")
    top = rel[:, :k]
    cum = np.cumsum(top, axis=1)
    total = (cum / np.arange(1, k + 1) * top).sum(1)
    hits = cum[:, -1] if k else np.zeros(len(rel), np.int64)
    if normalization == "retrieved":
        if n_relevant is not None:
            _as_n_relevant(n_relevant, len(rel), hits)
        den = hits
    else:
        if n_relevant is None:
            raise ValueError(f"normalization={normalization!r} needs n_relevant")
        n_relevant = _as_n_relevant(n_relevant, len(rel), hits)
        den = np.minimum(n_relevant, k) if normalization == "min" else n_relevant
    return _safe_divide(total, den, 0.0)


def mean_average_precision_at_k(
    rel: np.ndarray,
    k: int | None = DEFAULT_K,
    n_relevant: np.ndarray | None = None,
    normalization: str = "retrieved",
) -> float:
    """Mean over queries of :func:`average_precision_at_k` (queries without relevant items count as 0)."""
    ap = average_precision_at_k(rel, k, n_relevant, normalization)
    if len(ap) == 0:
        raise ValueError("no queries")
    return float(ap.mean())


def average_precision(rel: np.ndarray, n_relevant: np.ndarray | None = None) -> np.ndarray:
    """(Q,) classic AP over complete rankings: ``sum_i P@i * rel_i / R``, no cut-off.

    ``rel`` ranks the whole database; ``R`` is ``n_relevant`` (default: ``rel.sum(1)``). Given
    a truncated list, pass ``n_relevant`` so that relevant items never retrieved count as
    precision 0. A query with no relevant item scores 0.
    """
    rel = _as_rel(rel)
    if n_relevant is None:
        n_relevant = rel.sum(1)
    return average_precision_at_k(rel, None, n_relevant, normalization="all")


def mean_average_precision(rel: np.ndarray, n_relevant: np.ndarray | None = None) -> float:
    """Mean over queries of :func:`average_precision` (mAP over the whole database)."""
    ap = average_precision(rel, n_relevant)
    if len(ap) == 0:
        raise ValueError("no queries")
    return float(ap.mean())


# --------------------------------------------------------------------------------------------
# rankings from distances


def _narrow_integers(distances: np.ndarray) -> np.ndarray | None:
    """Integer distances in 0..65535 as uint8 or uint16 (the same order), else None: numpy's
    stable sort is a radix sort for these types, about 15 times faster than on int32."""
    if distances.dtype.kind not in "iu" or distances.size == 0:
        return None
    low, high = int(distances.min()), int(distances.max())
    if low < 0 or high > 65535:
        return None
    dtype = np.uint8 if high < 256 else np.uint16
    return distances if distances.dtype == dtype else distances.astype(dtype)


def _stable_argsort(values: np.ndarray) -> np.ndarray:
    """Row-wise argsort, equal values in index order (a stable sort's result): numpy's SIMD
    quicksort of the values, then, where equal values sit side by side, a quicksort of
    ``rank of the value * N + index`` puts each run of ties in index order. Two quicksorts are
    several times faster than one merge sort."""
    order = np.argsort(values, axis=1)
    ranked = np.take_along_axis(values, order, axis=1)
    new_value = np.ones(values.shape, dtype=bool)
    new_value[:, 1:] = ranked[:, 1:] != ranked[:, :-1]
    if new_value.all():
        return order.astype(np.int64, copy=False)
    n_items = values.shape[1]
    key = (np.cumsum(new_value, axis=1, dtype=np.int64) - 1) * n_items + order
    key.sort(axis=1)
    return key % n_items


def top_k_by_distance(distances: np.ndarray, k: int | None = None) -> np.ndarray:
    """(Q, min(k, N)) int64 column indices of the k smallest distances of each row.

    Ordered by (distance, index): among equal distances the smaller index comes first, also at
    the cut-off -- the order faiss's exact indexes return (:class:`cbir.search.HammingIndex`).
    ``k=None`` ranks the whole row. Linear time per row plus ``k log k``.
    """
    distances = np.asarray(distances)
    if distances.ndim != 2:
        raise ValueError(f"distances must be 2-D, got shape {distances.shape}")
    if distances.dtype.kind == "f" and np.isnan(distances).any():
        raise ValueError("distances contain NaN")
    n_queries, n_items = distances.shape
    k = _as_k(k, n_items)
    narrow = _narrow_integers(distances)
    if narrow is not None:  # Hamming distances: a radix sort of the whole row beats partitioning
        return np.argsort(narrow, axis=1, kind="stable")[:, :k].astype(np.int64)
    if k == n_items:
        return _stable_argsort(distances)
    kth = np.partition(distances, k - 1, axis=1)[:, k - 1 : k]
    less = distances < kth
    equal = distances == kth
    n_less = less.sum(1, keepdims=True)
    chosen = less | (equal & (np.cumsum(equal, axis=1) <= k - n_less))
    columns = np.nonzero(chosen)[1].reshape(n_queries, k)  # row-major: increasing index per row
    order = np.argsort(np.take_along_axis(distances, columns, axis=1), axis=1, kind="stable")
    return np.take_along_axis(columns, order, axis=1).astype(np.int64)


# --------------------------------------------------------------------------------------------
# tie-aware AP@k


def tie_groups(distances: np.ndarray, relevant: np.ndarray, order: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per-row tie groups in increasing distance: sizes ``n`` and relevant counts ``r``, (Q, G);
    what the tie-aware metrics are computed from (count them once for several metrics).

    Empty groups (size 0) may appear and are harmless. Integer distances with a small range
    (Hamming distances: 0..L) use a direct histogram; otherwise rows are sorted (or ordered by
    ``order``, the rows' ranking when the caller has it).
    """
    n_queries, n_items = distances.shape
    rows = np.arange(n_queries, dtype=np.int64)[:, None]
    if distances.dtype.kind in "iu":
        low = int(distances.min())
        span = int(distances.max()) - low + 1
        if span <= max(4 * n_items, 1024):
            flat = (rows * span + (distances.astype(np.int64) - low)).ravel()
            size = n_queries * span
            n = np.bincount(flat, minlength=size).reshape(n_queries, span)
            r = np.bincount(flat[relevant.ravel()], minlength=size).reshape(n_queries, span)
            return n.astype(np.float64), r.astype(np.float64)
    if order is None:
        order = np.argsort(distances, axis=1)  # floats (integers were counted above); ties group whatever their order
    sorted_d = np.take_along_axis(distances, order, axis=1)
    new_group = np.ones(distances.shape, dtype=bool)
    new_group[:, 1:] = sorted_d[:, 1:] != sorted_d[:, :-1]
    level = np.cumsum(new_group, axis=1) - 1
    flat = (rows * n_items + level).ravel()
    size = n_queries * n_items
    n = np.bincount(flat, minlength=size).reshape(n_queries, n_items)
    r = np.bincount(flat[np.take_along_axis(relevant, order, axis=1).ravel()], minlength=size).reshape(n_queries, n_items)
    return n.astype(np.float64), r.astype(np.float64)


def tie_aware_ap_from_groups(n: np.ndarray, r: np.ndarray, k: int, normalization: str = "retrieved") -> np.ndarray:
    """Expected AP@k given tie-group sizes ``n`` and relevant counts ``r`` (Q, G) of :func:`tie_groups`.

    Groups are in increasing distance; ``k`` <= total size. See
    :func:`tie_aware_average_precision_at_k` for the derivation.
    """
    n_queries = len(n)
    n_items = int(n[0].sum()) if n_queries else 0
    harmonic = np.concatenate([[0.0], np.cumsum(1.0 / np.arange(1, n_items + 1))])  # H[i] = sum_{j<=i} 1/j
    log_fact = np.concatenate([[0.0], np.cumsum(np.log(np.arange(1, n_items + 1)))])  # log i!

    end = np.cumsum(n, axis=1)
    start = end - n
    r_before = np.cumsum(r, axis=1) - r
    full = (end <= k) & (n > 0)

    # Groups entirely inside the top k: expected sum of P@i over their relevant positions.
    a = np.where(full, harmonic[np.minimum(end, k).astype(np.int64)] - harmonic[np.minimum(start, k).astype(np.int64)], 0.0)
    b = n - (start + 1) * a  # sum_{j=1..n} (j - 1) / (start + j)
    pair = np.divide(r - 1, n - 1, out=np.zeros_like(r), where=n > 1)
    frac = np.divide(r, n, out=np.zeros_like(r), where=n > 0)
    contrib = np.where(full, frac * ((r_before + 1) * a + pair * b), 0.0)
    s_full = contrib.sum(1)
    r_full = np.where(full, r, 0.0).sum(1)
    if normalization == "retrieved":
        ap = np.divide(s_full, r_full, out=np.zeros(n_queries), where=r_full > 0)
    else:  # a fixed denominator: E[AP] = E[S] / denominator
        r_total = r.sum(1)
        fixed = np.minimum(r_total, k) if normalization == "min" else r_total
        ap = s_full.copy()

    # The group straddling the cut-off (start < k < end), if any: condition on X, the number of
    # its relevant items among the m = k - start slots inside the top k (hypergeometric).
    boundary = (start < k) & (end > k)
    cut = np.nonzero(boundary.any(1))[0]
    if len(cut) == 0:
        return ap if normalization == "retrieved" else _safe_divide(ap, fixed, 0.0)
    col = boundary[cut].argmax(1)
    t = start[cut, col].astype(np.int64)
    nb = n[cut, col].astype(np.int64)
    rb = r[cut, col].astype(np.int64)
    m = k - t
    lo = np.maximum(0, m - (nb - rb))
    hi = np.minimum(m, rb)
    lengths = hi - lo + 1
    owner = np.repeat(np.arange(len(cut)), lengths)
    offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    x = lo[owner] + np.arange(lengths.sum()) - offsets[owner]
    nb_o, rb_o, m_o = nb[owner], rb[owner], m[owner]
    log_p = (
        log_fact[rb_o] - log_fact[x] - log_fact[rb_o - x]
        + log_fact[nb_o - rb_o] - log_fact[m_o - x] - log_fact[nb_o - rb_o - m_o + x]
        - (log_fact[nb_o] - log_fact[m_o] - log_fact[nb_o - m_o])
    )
    p = np.exp(log_p)
    a_b = harmonic[k] - harmonic[t]
    b_b = m - (t + 1) * a_b
    s_full_o = s_full[cut][owner]
    r_full_o = r_full[cut][owner]
    xf = x.astype(np.float64)
    pair_b = np.divide(xf - 1, m_o - 1, out=np.zeros_like(xf), where=m_o > 1)
    s_b = xf / m_o * ((r_full_o + 1) * a_b[owner] + pair_b * b_b[owner])
    if normalization != "retrieved":
        ap[cut] += np.bincount(owner, weights=p * s_b, minlength=len(cut))
        return _safe_divide(ap, fixed, 0.0)
    den = r_full_o + xf
    value = np.divide(s_full_o + s_b, den, out=np.zeros_like(xf), where=den > 0)
    ap[cut] = np.bincount(owner, weights=p * value, minlength=len(cut))
    return ap


def tie_aware_precision_at_k(distances: np.ndarray, relevant: np.ndarray, ks: Sequence[int], order: np.ndarray | None = None) -> np.ndarray:
    """(Q, len(ks)) expected precision@k over uniformly random orders of equidistant items.

    The groups entirely inside the top k contribute their relevant items; the group cut by
    position k contributes its relevant fraction of the slots it gets. Without ties this equals
    :func:`precision_at_k`. ``k`` beyond the database is clamped to it. ``order``: the rows'
    full ranking (:func:`top_k_by_distance` with ``k=None``), when the caller has it already.
    """
    distances, relevant = _check_pair(distances, relevant)
    return tie_aware_precision_from_groups(*tie_groups(distances, relevant, order), ks)


def tie_aware_precision_from_groups(n: np.ndarray, r: np.ndarray, ks: Sequence[int]) -> np.ndarray:
    """:func:`tie_aware_precision_at_k` from the rows' :func:`tie_groups` (Q, len(ks))."""
    end = np.cumsum(n, axis=1)
    start = end - n
    n_items = int(end[0, -1]) if len(n) else 0
    share = np.divide(r, n, out=np.zeros_like(r), where=n > 0)
    out = np.empty((len(n), len(ks)))
    for j, k in enumerate(ks):
        k = _as_k(k, n_items)
        inside = np.clip(k - start, 0, n)  # slots of each group within the top k
        out[:, j] = (inside * share).sum(1) / k
    return out


def tie_aware_average_precision_at_k(
    distances: np.ndarray,
    relevant: np.ndarray,
    k: int | None = DEFAULT_K,
    normalization: str = "retrieved",
) -> np.ndarray:
    """(Q,) tie-aware AP@k: the expected AP@k over uniformly random orders within equal distances.

    ``distances`` (Q, N) and ``relevant`` (Q, N) cover the whole database. After He, Cakir,
    Bargal & Sclaroff, "Hashing as Tie-Aware Learning to Rank" (CVPR 2018), whose tie-aware AP
    is the ``k = N`` case. AP@k uses the ``normalization`` of :func:`average_precision_at_k`:
    by default the hashing one (divide by the relevant items retrieved in the top k, 0 when
    none); ``"min"`` and ``"all"`` divide by ``min(R, k)`` and ``R`` (R = ``relevant.sum(1)``),
    fixed denominators, so their expectation is simply ``E[S] / denominator``.
    ``k=None`` (or ``k >= N``) ranks the whole database.

    Closed form. Sort the items into tie groups by distance; a group of ``n`` items of which
    ``r`` are relevant occupies positions ``t+1 .. t+n`` (``t`` items before it, ``R`` of them
    relevant). In a uniformly random order of the group, position ``t+j`` holds a relevant item
    with probability ``r/n``, and given that, the expected number of relevant items among the
    ``j-1`` group positions before it is ``(j-1)(r-1)/(n-1)``. Hence the expected contribution of
    the group to ``S = sum_i P@i * rel_i`` is::

        E_g = (r/n) * sum_{j=1..n} (R + 1 + (j-1)(r-1)/(n-1)) / (t+j)
            = (r/n) * ((R + 1) * A + (r-1)/(n-1) * B),
        A = H(t+n) - H(t),   B = sum_j (j-1)/(t+j) = n - (t+1) * A,

    with ``H`` the harmonic numbers (O(1) per group). Groups entirely inside the top k have a
    fixed number of relevant items, so their contributions add up to ``S_full`` with ``R_full``
    relevant items. The group cut by position k (``m = k - t`` of its slots inside) makes
    ``R_k = R_full + X`` random, with ``X`` hypergeometric (``n`` items, ``r`` relevant, ``m``
    drawn); since ``E[S / R_k] != E[S] / E[R_k]`` we condition on ``X = x``: the ``m`` slots
    then hold ``x`` relevant items in uniformly random order, so the same formula with
    ``(n, r) -> (m, x)`` gives ``S_b(x)``, and::

        E[AP@k] = sum_x P(X = x) * (S_full + S_b(x)) / (R_full + x)     (0 when R_full + x = 0).

    Cost per query: a histogram (Hamming distances) or a sort (float distances) of the row, plus
    ``O(min(m, r))`` for the cut group. Without ties this equals the conventional AP@k.
    """
    distances, relevant = _check_pair(distances, relevant)
    k = _as_k(k, distances.shape[1])
    if normalization not in NORMALIZATIONS:
        raise ValueError(f"unknown normalization {normalization!r}; expected one of {NORMALIZATIONS}")
    n, r = tie_groups(distances, relevant)
    return tie_aware_ap_from_groups(n, r, k, normalization)


# --------------------------------------------------------------------------------------------
# one-stop evaluation of distance rows


def evaluate_distances(
    distances: np.ndarray,
    relevant: np.ndarray | None = None,
    k: int | None = DEFAULT_K,
    *,
    query_labels: np.ndarray | None = None,
    database_labels: np.ndarray | None = None,
    chunk_size: int = 256,
    normalization: str = "retrieved",
    order: np.ndarray | None = None,
) -> pd.DataFrame:
    """Per-query metrics from full distance rows, computed ``chunk_size`` queries at a time.

    ``distances`` is (Q, N) over the whole database (e.g. ``HammingIndex.pairwise(queries)``);
    relevance is given either as ``relevant`` (Q, N) bool or through ``query_labels`` and
    ``database_labels`` (see :func:`relevance_from_labels`; computed per chunk).

    Returns a DataFrame with one row per query and columns ``n_relevant`` (in the database),
    ``ap`` (AP@k, hashing normalisation, ties broken by database index as faiss does),
    ``tie_aware_ap`` (expected AP@k over random orders of ties), ``precision`` and ``recall``
    (at k, recall 0 for queries without relevant items). ``k=None`` evaluates the complete
    ranking, giving the classic whole-database AP. ``normalization`` is passed to both APs (see
    :func:`average_precision_at_k`). ``df.attrs`` holds the effective ``k`` and the
    ``normalization``. ``order``: the rows' full ranking (:func:`top_k_by_distance` with
    ``k=None``) when the caller has it, so that the rows are not sorted again.
    """
    distances = np.asarray(distances)
    if distances.ndim != 2 or distances.shape[1] == 0:
        raise ValueError(f"distances must be a non-empty 2-D (n_queries, n_database) array, got {distances.shape}")
    if (relevant is None) == (query_labels is None or database_labels is None):
        raise ValueError("give either relevant, or both query_labels and database_labels")
    if relevant is not None:
        relevant = _as_rel(relevant, "relevant")
        if relevant.shape != distances.shape:
            raise ValueError(f"relevant must have the shape of distances {distances.shape}, got {relevant.shape}")
    else:
        query_labels = np.asarray(query_labels)
        database_labels = np.asarray(database_labels)
        if len(query_labels) != distances.shape[0] or len(database_labels) != distances.shape[1]:
            raise ValueError("labels must match the rows (queries) and columns (database) of distances")
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, (int, np.integer)) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive integer, got {chunk_size!r}")
    if normalization not in NORMALIZATIONS:
        raise ValueError(f"unknown normalization {normalization!r}; expected one of {NORMALIZATIONS}")
    k = _as_k(k, distances.shape[1])
    parts = []
    for s in range(0, len(distances), chunk_size):
        d = distances[s : s + chunk_size]
        if relevant is not None:
            rel_full = relevant[s : s + chunk_size]
        else:
            rel_full = relevance_from_labels(query_labels[s : s + chunk_size], database_labels)
        d, rel_full = _check_pair(d, rel_full)
        n_rel = rel_full.sum(1)
        ranked = order[s : s + chunk_size] if order is not None else None
        rel = np.take_along_axis(rel_full, ranked[:, :k] if ranked is not None else top_k_by_distance(d, k), axis=1)
        parts.append(
            pd.DataFrame(
                {
                    "n_relevant": n_rel.astype(np.int64),
                    "ap": average_precision_at_k(rel, k, n_rel, normalization),
                    "tie_aware_ap": tie_aware_ap_from_groups(*tie_groups(d, rel_full, ranked), k, normalization),
                    "precision": precision_at_k(rel, k),
                    "recall": recall_at_k(rel, n_rel, k),
                }
            )
        )
    columns = ["n_relevant", "ap", "tie_aware_ap", "precision", "recall"]
    frame = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=columns)
    frame.attrs["k"] = k
    frame.attrs["normalization"] = normalization
    return frame


# --------------------------------------------------------------------------------------------
# precision-recall curves


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


# --------------------------------------------------------------------------------------------
# INRIA Holidays


def score_ap_from_ranks_1(ranks: Sequence[int], nres: int) -> float:
    """AP of one search, as ``score_ap_from_ranks_1`` of the official Holidays ``holidays_map.py``.

    ``ranks``: increasing 0-based ranks of the true positives in the result list (the query
    itself removed); ``nres``: number of positives in the dataset. The precision-recall curve
    is integrated with the trapezoid rule: each positive adds ``1/nres`` of recall, between
    precision ``ntp / rank`` (1 at rank 0) on the left and ``(ntp + 1) / (rank + 1)`` on the right.
    The official script divides by zero when ``nres == 0``; this returns 0 instead.
    """
    if nres <= 0:
        return 0.0
    ap = 0.0
    recall_step = 1.0 / nres
    for ntp, rank in enumerate(ranks):
        precision_0 = 1.0 if rank == 0 else ntp / float(rank)
        precision_1 = (ntp + 1) / float(rank + 1)
        ap += (precision_1 + precision_0) * recall_step / 2.0
    return ap


def holidays_average_precision(ranked_ids: Sequence, relevant_ids: Iterable, query_id=None) -> float:
    """Holidays AP of one query from its ranked result list, exactly as ``holidays_map.py``.

    ``ranked_ids``: database image ids, best first (may be truncated). ``relevant_ids``: the
    other images of the query's group. ``query_id``: the query image; if it occurs in the list it
    is skipped and the ranks after it shift up by one (the script's ``rank_shift``), and it is
    never counted as relevant. The number of positives is the size of the relevant set (without
    the query), so relevant images missing from a truncated list lower the AP.
    """
    relevant = set(relevant_ids)
    relevant.discard(query_id)
    ranks = []
    shift = 0
    for rank, image_id in enumerate(ranked_ids):
        if query_id is not None and image_id == query_id:
            shift = -1
        elif image_id in relevant:
            ranks.append(rank + shift)
    return score_ap_from_ranks_1(ranks, len(relevant))


def holidays_mean_average_precision(results: Mapping, ground_truth: Mapping) -> float:
    """Holidays mAP: mean of :func:`holidays_average_precision` over queries.

    ``results`` maps each query id to its ranked list of database ids; ``ground_truth`` maps each
    query id to its relevant ids. Like the official script, every ground-truth query must have
    results (KeyError otherwise) and unknown queries are an error.
    """
    unknown = set(results) - set(ground_truth)
    if unknown:
        raise KeyError(f"results for unknown queries: {sorted(map(str, unknown))[:5]}")
    missing = set(ground_truth) - set(results)
    if missing:
        raise KeyError(f"no results for queries: {sorted(map(str, missing))[:5]}")
    if not results:
        raise ValueError("no queries")
    return float(np.mean([holidays_average_precision(results[q], ground_truth[q], q) for q in results]))
