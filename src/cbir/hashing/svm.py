"""A batched primal solver for L2-regularised squared-hinge linear SVMs (LIBLINEAR's -s 2 problem).

For every column k of the label matrix Y (values in {-1, +1}) it minimises

    f_k(v) = 0.5 ||v||^2 + C sum_n max(0, 1 - Y[n, k] * x_n . v)^2

over v, all columns at once so that the work is a few large float32 matmuls. A bias handled like
LIBLINEAR's ``-B 1`` (and sklearn's LinearSVC with intercept_scaling=1) is a column of ones in X,
regularised like any other weight.

Method: truncated Newton (Keerthi & DeCoste 2005; the generalised Hessian of LIBLINEAR's TRON).
Each Newton step solves H d = -g with diagonally preconditioned conjugate gradients, where for all
columns at once H s = s + 2C X^T (act * (X s)), act the active set {n: Y x_n . v < 1}; CG stops
when ||r|| <= cg_tol ||g|| (or after max_cg steps). The step length is the exact minimiser of the
piecewise-quadratic f along d (sort the breakpoints). A column stops by LIBLINEAR's rule,
||grad f_k(v)|| <= tol * max(min(#pos, #neg), 1) / N * ||grad f_k(0)|| (its default tol is 0.01),
or after max_newton steps.
Rotating X by an orthogonal matrix does not change the problem; in a PCA basis X^T X is diagonal,
which makes the diagonal preconditioner effective (the binary autoencoder does this once per fit).
"""

from __future__ import annotations

import numpy as np

from cbir.hashing.base import blas_threads, single_threaded_blas, threaded_map

_NEWTON_CAP = 1000  # LIBLINEAR's TRON: at most 1000 Newton iterations


def svm_objective(X: np.ndarray, Y: np.ndarray, V: np.ndarray, C: float) -> np.ndarray:
    """f_k(V[:, k]) for every column k (float64)."""
    margins = (X @ V.astype(X.dtype)).astype(np.float64)
    loss = np.maximum(0.0, 1.0 - Y * margins)
    V = np.asarray(V, dtype=np.float64)
    return 0.5 * (V * V).sum(axis=0) + C * (loss * loss).sum(axis=0)


def exact_line_search(V, D, M, XD, Y, C) -> np.ndarray:
    """argmin_{t >= 0} f(V + t D) per column, given margins M = X V and XD = X D.

    f is piecewise quadratic along D, so f' is piecewise linear and increasing: sort the points
    where an example enters or leaves the active set, and find the segment where f' crosses 0.
    """
    # Per column, along contiguous rows: the work is transposed to (K, N), where sorting and
    # scanning a column's N breakpoints run over contiguous memory (the same operations, in the
    # same order, as on the (N, K) layout: only faster).
    U = (1.0 - Y * M).T  # residuals at t = 0: example n is active while U - t S > 0
    S = (Y * XD).T
    active = (U > 0) | ((U == 0) & (S < 0))
    A = (V * D).sum(axis=0) - 2 * C * (active * S * U).sum(axis=1)  # f'(t) = A + B t on a segment
    B = (D * D).sum(axis=0) + 2 * C * (active * S * S).sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        T = U / S
    valid = (S != 0) & (T > 0)
    T = np.where(valid, T, np.inf)
    sign = np.where(S > 0, 1.0, -1.0)  # S > 0: leaves the active set at T; S < 0: enters it
    dA = np.where(valid, sign * 2 * C * S * U, 0.0)
    dB = np.where(valid, -sign * 2 * C * S * S, 0.0)
    order = np.argsort(T, axis=1)
    T = np.take_along_axis(T, order, axis=1)
    zero = np.zeros((T.shape[0], 1))
    A_seg = A[:, None] + np.hstack([zero, np.cumsum(np.take_along_axis(dA, order, axis=1), axis=1)])
    B_seg = B[:, None] + np.hstack([zero, np.cumsum(np.take_along_axis(dB, order, axis=1), axis=1)])
    ends = np.hstack([T, np.full_like(zero, np.inf)])
    with np.errstate(invalid="ignore"):
        slope_at_end = np.where(np.isinf(ends), np.inf, A_seg + B_seg * ends)
    seg = np.argmax(slope_at_end >= 0, axis=1)[:, None]
    A_k, B_k = np.take_along_axis(A_seg, seg, 1)[:, 0], np.take_along_axis(B_seg, seg, 1)[:, 0]
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(B_k > 0, -A_k / B_k, 0.0)
    return np.maximum(t, 0.0)


class _Preconditioner:
    """Approximate inverse of H = I + 2C X^T diag(act) X per column: diagonal, except for a dense
    block over the first ``block`` coordinates (the top principal directions when X is in a PCA
    basis, where the active set couples coordinates most)."""

    def __init__(self, X, X_sq, act, C, block):
        dt = X.dtype
        self.diag = 1.0 + 2 * C * (X_sq.T @ act.astype(dt)).astype(np.float64)
        self.block = min(block, X.shape[1])
        if self.block:
            k = self.block
            inv = np.empty((act.shape[1], k, k))

            def invert(j):
                Xk = X[act[:, j] > 0, :k].astype(np.float64)
                inv[j] = np.linalg.inv(np.eye(k) + 2 * C * (Xk.T @ Xk))

            # Many small products and LAPACK calls: one BLAS thread each, columns side by side on
            # the threads the BLAS may use (each column computed alike, so results do not change).
            workers = blas_threads()
            with single_threaded_blas():
                threaded_map(invert, range(act.shape[1]), workers)
            self.inv = inv

    def __call__(self, r):
        z = r / self.diag
        if self.block:
            z[: self.block] = np.einsum("jab,bj->aj", self.inv, r[: self.block])
        return z


def _pcg(X, precond, act, G, C, cg_tol, max_cg):
    """Preconditioned CG for H d = -G (one system per column); also returns X d and #steps."""
    dt = X.dtype
    r = -G
    z = precond(r)
    p = z.copy()
    rz = (r * z).sum(axis=0)
    stop = cg_tol * np.linalg.norm(G, axis=0)
    d = np.zeros_like(G)
    Xd = np.zeros(act.shape)
    done = np.zeros(G.shape[1], dtype=bool)
    steps = 0
    for steps in range(1, max_cg + 1):
        Xp = (X @ p.astype(dt)).astype(np.float64)
        Hp = p + 2 * C * (X.T @ (act * Xp).astype(dt)).astype(np.float64)
        pHp = (p * Hp).sum(axis=0)
        alpha = np.where(done | (pHp <= 0), 0.0, rz / np.where(pHp > 0, pHp, 1.0))
        d += alpha * p
        Xd += alpha * Xp
        r -= alpha * Hp
        done |= np.linalg.norm(r, axis=0) <= stop
        if done.all():
            break
        z = precond(r)
        rz_new = (r * z).sum(axis=0)
        p = z + (rz_new / np.where(rz > 0, rz, 1.0)) * p
        rz = rz_new
    return d, Xd, steps


def fit_squared_hinge_svm(
    X: np.ndarray,
    Y: np.ndarray,
    C: float,
    V0: np.ndarray | None = None,
    *,
    tol: float = 0.01,
    max_newton: int | None = 30,
    cg_tol: float = 0.1,
    max_cg: int | None = 50,
    X_sq: np.ndarray | None = None,
    precond_block: int = 0,
) -> tuple[np.ndarray, dict]:
    """Solve one squared-hinge SVM per column of Y (see the module docstring).

    X: (N, P) float32 or float64 design (append a column of ones for a regularised bias).
    Y: (N, K) labels in {-1, +1}. V0: (P, K) warm start (default zeros). X_sq: X ** 2, if cached.
    max_newton / max_cg None: no budget, iterate until the stopping rules hold (LIBLINEAR's TRON
    caps Newton at 1000 steps; CG converges in at most P steps in exact arithmetic).
    Returns V (P, K) float64 and a dict with the numbers of Newton and CG steps.
    """
    Y = np.asarray(Y, dtype=np.float64)
    n, k = Y.shape
    if X.shape[0] != n:
        raise ValueError(f"X has {X.shape[0]} rows but Y has {n}")
    dt = X.dtype
    max_newton = _NEWTON_CAP if max_newton is None else int(max_newton)
    max_cg = 2 * X.shape[1] if max_cg is None else int(max_cg)  # 2P: CG in float32 loses orthogonality
    if X_sq is None:
        X_sq = X * X
    V = np.zeros((X.shape[1], k)) if V0 is None else np.array(V0, dtype=np.float64)
    g0_norm = np.linalg.norm(2 * C * (X.T @ Y.astype(dt)).astype(np.float64), axis=0)
    n_pos = (Y > 0).sum(axis=0)
    stop = tol * np.maximum(np.minimum(n_pos, n - n_pos), 1) / n * g0_norm  # LIBLINEAR's rule
    M = (X @ V.astype(dt)).astype(np.float64)
    todo = np.arange(k)
    n_newton = n_cg = 0
    for _ in range(max_newton + 1):
        Yt, Mt, Vt = Y[:, todo], M[:, todo], V[:, todo]
        U = 1.0 - Yt * Mt
        act = (U > 0).astype(np.float64)
        G = Vt - 2 * C * (X.T @ (Yt * U * act).astype(dt)).astype(np.float64)
        keep = np.linalg.norm(G, axis=0) > stop[todo]
        if not keep.any() or n_newton == max_newton:
            break
        todo, Yt, Mt, Vt, act, G = todo[keep], Yt[:, keep], Mt[:, keep], Vt[:, keep], act[:, keep], G[:, keep]
        precond = _Preconditioner(X, X_sq, act, C, precond_block)
        D, XD, steps = _pcg(X, precond, act, G, C, cg_tol, max_cg)
        t = exact_line_search(Vt, D, Mt, XD, Yt, C)
        V[:, todo] = Vt + t * D
        M[:, todo] = Mt + t * XD
        n_newton += 1
        n_cg += steps
    return V, {"n_newton": n_newton, "n_cg": n_cg}
