"""Tie-aware metrics: the expected AP@k and precision@k over uniformly random orders of items at
equal distance (He, Cakir, Bargal & Sclaroff, CVPR 2018), computed from tie groups."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from cbir.metrics._common import DEFAULT_K, NORMALIZATIONS, _as_k, _check_pair, _safe_divide


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
