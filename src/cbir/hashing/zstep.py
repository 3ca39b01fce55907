"""The Z step of the binary autoencoder: per point, the best binary code given decoder and encoder.

With decoder f(z) = A z + c, G = A^T A and q_n = A^T (x_n - c),

    ||x_n - f(z)||^2 + mu ||z - h_n||^2 = ||x_n - c||^2 + F_n(z),
    F_n(z) = -2 z.q_n + z^T G z + mu * Hamming(z, h_n),

so everything happens in the L-dimensional code space. ``h_err[n] = ||x_n - f(h_n)||^2 >= 0``
bounds the search: since the reconstruction term is >= 0, a code z can only beat h_n if
mu * Hamming(z, h_n) <= h_err[n], i.e. within radius floor(h_err[n] / mu) of h_n.
"""

from __future__ import annotations

import itertools
from functools import lru_cache
from math import comb

import numpy as np

from cbir.hashing.base import threaded_map

_CHUNK_ELEMENTS = 1 << 21  # entries of the (points x candidates) score block per chunk


def zstep_objective(Z, q, G, H, mu) -> np.ndarray:
    """F_n(z_n) for every row (float64): -2 z.q + z^T G z + mu * Hamming(z, h)."""
    Z = np.asarray(Z, dtype=np.float64)
    return -2 * (Z * q).sum(axis=1) + ((Z @ G) * Z).sum(axis=1) + mu * (Z != H).sum(axis=1)


@lru_cache(maxsize=8)
def all_codes(n_bits: int) -> np.ndarray:
    """All 2^L codes as a read-only (2^L, L) float64 array of 0/1, row i = binary digits of i."""
    codes = (np.arange(1 << n_bits)[:, None] >> np.arange(n_bits - 1, -1, -1)) & 1
    codes = codes.astype(np.float64)
    codes.flags.writeable = False
    return codes


@lru_cache(maxsize=64)
def flip_masks(n_bits: int, radius: int) -> np.ndarray:
    """All (M, L) 0/1 masks with at most ``radius`` ones, the zero mask first (read-only)."""
    rows = [np.zeros(n_bits)]
    for k in range(1, radius + 1):
        for idx in itertools.combinations(range(n_bits), k):
            row = np.zeros(n_bits)
            row[list(idx)] = 1
            rows.append(row)
    masks = np.array(rows)
    masks.flags.writeable = False
    return masks


def search_radius(h_err, mu, n_bits) -> np.ndarray:
    """Hamming radius around h_n outside which no code can beat h_n."""
    h_err = np.maximum(np.asarray(h_err, dtype=np.float64), 0.0)
    if mu <= 0:
        return np.full(h_err.shape, n_bits)
    return np.minimum(np.floor(h_err / mu), n_bits).astype(int)


def zstep_exact(q, G, H, mu, h_err=None) -> np.ndarray:
    """Exact minimiser of F_n over {0,1}^L for every point (keeps h_n on ties).

    Vectorised over chunks of points; points are grouped by their search radius r and, per group,
    either the flips of at most r bits of h_n are scored (few candidates) or all 2^L codes are.
    """
    q = np.asarray(q, dtype=np.float64)
    H = np.asarray(H, dtype=np.uint8)
    n, n_bits = q.shape
    radius = search_radius(h_err if h_err is not None else np.inf * np.ones(n), mu, n_bits)
    Z = H.copy()
    for r in np.unique(radius[radius > 0]):
        idx = np.flatnonzero(radius == r)
        n_masks = sum(comb(n_bits, k) for k in range(r + 1))
        if n_masks * n_bits <= (1 << n_bits):
            _best_flips(Z, idx, q, G, H, mu, flip_masks(n_bits, int(r)))
        else:
            _best_of_all(Z, idx, q, G, H, mu)
    return Z


def _best_flips(Z, idx, q, G, H, mu, masks):
    """Z[idx] = best of h_n XOR m over the masks m (the zero mask first, so ties keep h_n)."""
    n_masks, n_bits = masks.shape
    penalty = mu * masks.sum(axis=1)
    step = max(1, _CHUNK_ELEMENTS // (n_masks * n_bits))
    for start in range(0, len(idx), step):
        rows = idx[start : start + step]
        h = H[rows].astype(np.float64)
        s = 1.0 - 2.0 * h  # flipping bit l adds s_l to z_l
        lin = 2.0 * (s * (h @ G - q[rows])) @ masks.T
        delta = s[:, None, :] * masks[None, :, :]
        quad = ((delta @ G) * delta).sum(axis=2)
        best = np.argmin(lin + quad + penalty, axis=1)
        Z[rows] = (H[rows] ^ masks[best].astype(np.uint8))


def _best_of_all(Z, idx, q, G, H, mu):
    """Z[idx] = best of all 2^L codes; h_n kept unless strictly beaten."""
    codes = all_codes(q.shape[1])
    const = ((codes @ G) * codes).sum(axis=1) + mu * codes.sum(axis=1)
    weights = 1 << np.arange(q.shape[1] - 1, -1, -1)
    step = max(1, _CHUNK_ELEMENTS // len(codes))
    for start in range(0, len(idx), step):
        rows = idx[start : start + step]
        h = H[rows].astype(np.float64)
        score = const - 2.0 * (q[rows] + mu * h) @ codes.T
        best = np.argmin(score, axis=1)
        at_h = np.take_along_axis(score, (H[rows] @ weights)[:, None], axis=1)[:, 0]
        better = score[np.arange(len(rows)), best] < at_h
        Z[rows[better]] = codes[best[better]].astype(np.uint8)


def box_qp(q, G, H, mu, Z0, max_iter: int = 100, tol: float = 1e-4) -> np.ndarray:
    """The relaxation min_{z in [0,1]^L} z^T (G + mu I) z - 2 z.(q + mu h), per point.

    Accelerated projected gradient (FISTA with adaptive restart), warm-started at Z0, batched over
    points; points whose coordinates all moved by less than ``tol`` in the last step are dropped
    (checked every 10 steps). Only a starting point for rounding, so it need not be precise.
    """
    n, n_bits = q.shape
    Q = G + mu * np.eye(n_bits)
    step = 1.0 / (2.0 * max(np.linalg.eigvalsh(Q)[-1], 1e-12))
    out = np.clip(np.asarray(Z0, dtype=np.float64), 0.0, 1.0)
    todo = np.arange(n)
    z, y, b = out.copy(), out.copy(), np.asarray(q, dtype=np.float64) + mu * H
    t = np.ones((n, 1))
    for it in range(1, max_iter + 1):
        z_new = np.clip(y - (2.0 * step) * (y @ Q - b), 0.0, 1.0)
        diff = z_new - z
        restart = ((y - z_new) * diff).sum(axis=1, keepdims=True) > 0  # momentum uphill: reset
        t = np.where(restart, 1.0, t)
        t_new = 0.5 * (1.0 + np.sqrt(1.0 + 4.0 * t * t))
        y = z_new + ((t - 1.0) / t_new) * diff
        z, t = z_new, t_new
        if it % 10 == 0 or it == max_iter:
            out[todo] = z
            moving = np.abs(diff).max(axis=1) > tol
            if not moving.any():
                break
            todo, z, y, b, t = todo[moving], z[moving], y[moving], b[moving], t[moving]
    return out


def greedy_flips(Z0, q, G, H, mu, max_rounds: int | None = None) -> np.ndarray:
    """From Z0, repeatedly flip the single bit that lowers F_n the most, until none does.

    The change of F_n from flipping bit l (d = 1 - 2 z_l) is
    -2 d q_l + 2 d (G z)_l + G_ll + mu (1 + 2 d (z_l - h_l)): O(L) per bit given G z.
    """
    Z = np.array(Z0, dtype=np.float64)
    q = np.asarray(q, dtype=np.float64)
    Hf = np.asarray(H, dtype=np.float64)
    GZ = Z @ G
    diag = np.diag(G)
    todo = np.arange(len(Z))
    for _ in range(max_rounds or 10 * Z.shape[1] + 10):
        if len(todo) == 0:
            break
        z = Z[todo]
        d = 1.0 - 2.0 * z
        gain = -2 * d * q[todo] + 2 * d * GZ[todo] + diag + mu * (1.0 + 2.0 * d * (z - Hf[todo]))
        best = np.argmin(gain, axis=1)
        improve = gain[np.arange(len(todo)), best] < -1e-12 * (1.0 + np.abs(q[todo]).sum(axis=1))
        todo, best = todo[improve], best[improve]
        step = d[improve, best]
        Z[todo, best] += step
        GZ[todo] += step[:, None] * G[best]
    return Z.astype(np.uint8)


def zstep_relaxed(q, G, H, Z_prev, mu, h_err=None, max_iter: int = 100, tol: float = 1e-4, workers: int = 1) -> np.ndarray:
    """Approximate Z step for large L.

    Solve the box relaxation (warm-started at Z_prev), round at 1/2, and greedily flip bits; also
    run the greedy flips from h_n and from Z_prev and keep the best of the three (ties prefer h_n,
    then Z_prev), so the result is never worse than h_n, Z_prev or the rounded relaxation. Points
    whose search radius is 0 keep h_n, which is then optimal. The three greedy searches run on up
    to ``workers`` threads (each computed alike: the result does not depend on it, tested).
    """
    q = np.asarray(q, dtype=np.float64)
    H = np.asarray(H, dtype=np.uint8)
    n, n_bits = q.shape
    Z = H.copy()
    radius = search_radius(h_err if h_err is not None else np.inf * np.ones(n), mu, n_bits)
    idx = np.flatnonzero(radius > 0)
    if len(idx) == 0:
        return Z
    q_i, H_i, P_i = q[idx], H[idx], np.asarray(Z_prev, dtype=np.uint8)[idx]
    rounded = (box_qp(q_i, G, H_i, mu, P_i, max_iter=max_iter, tol=tol) > 0.5).astype(np.uint8)
    candidates = threaded_map(lambda start: greedy_flips(start, q_i, G, H_i, mu), (H_i, P_i, rounded), workers)
    scores = np.stack([zstep_objective(c, q_i, G, H_i, mu) for c in candidates])
    best = np.argmin(scores, axis=0)  # first minimum: h_n, then Z_prev, then the relaxation
    Z[idx] = np.stack(candidates)[best, np.arange(len(idx))]
    return Z


def zstep_authors(q, G, H, mu, relaxed_start, max_sweeps: int = 100) -> tuple[np.ndarray, np.ndarray]:
    """The authors' approximate Z step (their Zrelaxed.m then Zaltopt.m): (codes, relaxed solution).

    The box relaxation warm-started at ``relaxed_start`` (their previous relaxed solution, or
    h(X) at first); then sequential greedy truncation, bit 1..L, each set to the better of 0 and
    1 (ties: 0) with the earlier bits binary and the later ones still relaxed, the penalty
    mu (z_l - h_l)^2 of the relaxation; then alternating optimisation over single bits, cycling
    until L consecutive bits keep their value (a tie flips, as in Zaltopt) or ``max_sweeps``
    sweeps. Unlike :func:`zstep_relaxed`, the result is not compared with h(X) or the previous
    codes, so it can be worse than either: a weaker optimiser of E_Q that lets Z move further
    from h, which measurably keeps more Euclidean neighbours (docs/hashing-notes.md).
    """
    q = np.asarray(q, dtype=np.float64)
    Hf = np.asarray(H, dtype=np.float64)
    relaxed = box_qp(q, G, Hf, mu, relaxed_start)
    Z = relaxed.copy()
    GZ = Z @ G
    diag = np.diag(G)

    def change(i, value):  # F_n(z with z_i = value) - F_n(z), quadratic penalty on the relaxed bits
        d = value - Z[:, i]
        return d * (2 * GZ[:, i] - 2 * q[:, i] + diag[i] * d) + mu * ((value - Hf[:, i]) ** 2 - (Z[:, i] - Hf[:, i]) ** 2)

    n_bits = Z.shape[1]
    for i in range(n_bits):
        value = (change(i, 1.0) < change(i, 0.0)).astype(np.float64)
        GZ += np.outer(value - Z[:, i], G[i])
        Z[:, i] = value
    unchanged = np.zeros(len(Z), dtype=np.int64)
    for step in range(max_sweeps * n_bits):
        active = unchanged < n_bits
        if not active.any():
            break
        i = step % n_bits
        flip = active & (change(i, 1.0 - Z[:, i]) <= 0)  # on binary z the penalty is mu * Hamming
        d = np.where(flip, 1.0 - 2.0 * Z[:, i], 0.0)
        GZ += np.outer(d, G[i])
        Z[:, i] += d
        unchanged = np.where(flip, 0, unchanged + active)
    return Z.astype(np.uint8), relaxed


def zstep(q, G, H, Z_prev, mu, h_err=None, exact_max_bits: int = 16, workers: int = 1) -> np.ndarray:
    """Exact Z step for L <= exact_max_bits, else the relaxed one (on up to ``workers`` threads);
    never worse than Z_prev."""
    if q.shape[1] <= exact_max_bits:
        Z = zstep_exact(q, G, H, mu, h_err)
    else:
        Z = zstep_relaxed(q, G, H, Z_prev, mu, h_err, workers=workers)
    # guard against round-off: keep the previous code where it is at least as good
    worse = zstep_objective(Z, q, G, H, mu) > zstep_objective(Z_prev, q, G, H, mu)
    Z[worse] = np.asarray(Z_prev, dtype=np.uint8)[worse]
    return Z
