"""Binary autoencoder hashing (Carreira-Perpiñán & Raziperchikolaei, CVPR 2015), trained by MAC.

Encoder h(x) = step(W^T x + b) in {0,1}^L, linear decoder f(z) = A z + c. The method of auxiliary
coordinates introduces the codes Z as variables and minimises, for increasing mu,

    E_Q(h, f, Z; mu) = sum_n ||x_n - f(z_n)||^2 + mu ||z_n - h(x_n)||^2

by alternating (i) the h step (one linear SVM per bit on (X, Z[:, l])) and f step (least squares),
and (ii) the Z step (per point, in code space). It stops when Z = h(X), or after max_iter.
Design choices where the paper leaves room are documented on :class:`BinaryAutoencoder`.
"""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

from cbir.hashing.base import LinearHasher
from cbir.hashing.baselines import ITQ
from cbir.hashing.svm import exact_line_search, fit_squared_hinge_svm
from cbir.hashing.zstep import zstep


_PRECOND_BLOCK = 128  # SVM preconditioner: dense block over the top principal directions


class BinaryAutoencoder(LinearHasher):
    """Binary autoencoder hash function learned with the method of auxiliary coordinates.

    Parameters
    ----------
    n_bits : code length L (1..64).
    C : SVM regularisation (LIBLINEAR L2-regularised squared-hinge, bias as a regularised
        feature of value 1 -- ``-s 2 -B 1``), as in the paper: 100.
    max_iter : MAC iterations (one value of mu each); the paper uses up to 60.
    mu0 : first penalty; None means ``mu0_scale * e0 / L`` with e0 the mean squared
        reconstruction error of the ITQ codes under their least-squares decoder, which makes the
        schedule invariant to the scale of X.
    mu0_scale, mu_factor : the default geometric schedule mu_i = mu0 * mu_factor ** i. A flip
        away from h(x_n) never pays once mu > ||x_n - f(h(x_n))||^2, so mu0 is chosen well below
        the error per bit (Z moves freely at first) and the growth ends the run: with the
        defaults (0.05, 1.5) Z = h(X) was reached after 4-12 iterations on 2,048-d L2-normalised
        CNN-like features for L = 12..48; mu_factor = 1.25 lowered the final error a little
        further (about 0.2% at L = 48) for twice the iterations.
    mu_schedule : optional explicit sequence of mu values (overrides mu0/mu_factor; at most
        max_iter of them are used).
    exact_max_bits : exact (enumerative) Z step for L <= this, else relaxation + rounding +
        greedy bit flips.
    svm_tol, svm_max_newton, svm_max_cg : the h step solves each SVM inexactly: at most
        svm_max_newton truncated-Newton steps of at most svm_max_cg CG steps, stopping earlier by
        LIBLINEAR's rule with eps = svm_tol (its default 0.01). Warm starts carry the solves on
        across MAC iterations; the acceptance rule (below) keeps E_Q monotone regardless.
    itq_iter : ITQ iterations of the initialisation.
    random_state : passed to the ITQ initialisation (its PCA and random rotation), so the initial
        codes are those of ``ITQ(n_bits, random_state=random_state)``; nothing else is random.

    Attributes
    ----------
    W_ (D, L), b_ (L,) : the hash function, bits = (X @ W_ + b_ > 0).
    A_ (D, L), c_ (D,) : the linear decoder, refitted by least squares on h(X_train) at the end.
    trace_ : pandas DataFrame, one row per iteration (see ``fit``).
    n_iter_ : iterations run; converged_ : whether Z = h(X) was reached.
    n_features_in_ : D.

    Notes
    -----
    h step acceptance: the SVM minimises a surrogate (squared hinge), not the number of
    mismatches sum_n |z_nl - h_l(x_n)| that E_Q counts. A bit's new (w, b) is therefore accepted
    only if it does not increase that bit's mismatches; otherwise the old one is kept. This keeps
    E_Q non-increasing at fixed mu. Only the bits whose codes changed since their last fit are
    retrained, warm-started from their current (w, b); the ITQ projection, rescaled to minimise
    the SVM objective along it, is the warm start of the first fit.

    Z step: exact for L <= exact_max_bits (all codes within the Hamming radius
    floor(||x_n - f(h(x_n))||^2 / mu) of h(x_n)); otherwise the box relaxation is solved,
    rounded and improved by single bit flips, and the best of that, h(x_n) and the previous z_n
    (each also improved by flips) is kept -- never worse than the previous code.
    """

    def __init__(
        self,
        n_bits: int = 32,
        *,
        C: float = 100.0,
        max_iter: int = 60,
        mu0: float | None = None,
        mu0_scale: float = 0.05,
        mu_factor: float = 1.5,
        mu_schedule=None,
        exact_max_bits: int = 16,
        svm_tol: float = 0.01,
        svm_max_newton: int = 3,
        svm_max_cg: int = 10,
        itq_iter: int = 50,
        random_state=None,
        verbose: bool = False,
    ):
        self.n_bits = n_bits
        self.C = C
        self.max_iter = max_iter
        self.mu0 = mu0
        self.mu0_scale = mu0_scale
        self.mu_factor = mu_factor
        self.mu_schedule = mu_schedule
        self.exact_max_bits = exact_max_bits
        self.svm_tol = svm_tol
        self.svm_max_newton = svm_max_newton
        self.svm_max_cg = svm_max_cg
        self.itq_iter = itq_iter
        self.random_state = random_state
        self.verbose = verbose

    _needs_n_bits_le_features = True

    # ------------------------------------------------------------------ fitting
    def _fit(self, X):
        """Run MAC. ``trace_`` columns, per iteration i at mu = mu_i:

        E_Q_start / E_Q_hf / E_Q_z : E_Q(mu_i) at the start of the iteration, after the h and f
            steps and after the Z step (non-increasing within the row; E_Q_start of iteration 0
            is NaN since no decoder exists yet);
        recon_h : sum_n ||x_n - f(h(x_n))||^2 / N, the hash function's own codes decoded by the
            current f (the paper's E_BA);  recon_Z : the same for the auxiliary codes Z;
        mismatches : number of entries with Z != h(X) after the Z step;
        z_changed : entries of Z changed by the Z step;
        svm_trained / svm_accepted : bits retrained in the h step / whose new SVM was kept;
        newton_steps, cg_steps : SVM solver work;  seconds : wall time of the iteration.
        """
        if int(self.max_iter) < 1:
            raise ValueError(f"max_iter must be >= 1, got {self.max_iter}")
        if self.mu_schedule is not None and len(self.mu_schedule) == 0:
            raise ValueError("mu_schedule must not be empty")
        L = self.n_bits
        state = _MACState(X, float(self.C))
        itq = ITQ(L, n_iter=self.itq_iter, random_state=self.random_state).fit(X)
        state.init_from_linear(itq.W_, itq.b_)
        state.Z = state.H.copy()  # the ITQ codes (up to float round-off in the rescaled projection)

        rows = []
        mu = None
        converged = False
        for i in range(int(self.max_iter)):
            if self.mu_schedule is not None and i >= len(self.mu_schedule):
                break
            t0 = time.perf_counter()
            e_start = np.nan if mu is None else state.e_q(self._mu(i, state))
            trained, accepted, svm_info = state.h_step(tol=self.svm_tol, max_newton=self.svm_max_newton, max_cg=self.svm_max_cg)
            state.f_step()
            mu = self._mu(i, state)
            e_hf = state.e_q(mu)
            recon_h = state.recon(state.H).mean()
            z_changed = state.z_step(mu, self.exact_max_bits)
            e_z = state.e_q(mu)
            mismatches = int((state.Z != state.H).sum())
            rows.append(
                dict(
                    iteration=i, mu=mu, E_Q_start=e_start, E_Q_hf=e_hf, E_Q_z=e_z, recon_h=recon_h,
                    recon_Z=state.recon(state.Z).mean(), mismatches=mismatches, z_changed=z_changed,
                    svm_trained=trained, svm_accepted=accepted, newton_steps=svm_info["n_newton"],
                    cg_steps=svm_info["n_cg"], seconds=time.perf_counter() - t0,
                )
            )
            if self.verbose:
                print(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in rows[-1].items()))
            if mismatches == 0:
                converged = True
                break

        self.trace_ = pd.DataFrame(rows)
        self.n_iter_ = len(rows)
        self.converged_ = converged
        W_aug = state.W_aug
        self.W_ = W_aug[:-1].astype(np.float32)
        self.b_ = W_aug[-1].astype(np.float32)
        self.A_, self.c_ = _least_squares_decoder(state.X, state.H)

    def _mu(self, i: int, state: "_MACState") -> float:
        if self.mu_schedule is not None:
            return float(self.mu_schedule[i])
        if self.mu0 is None:
            if not hasattr(state, "mu0"):
                # the decoder was just fitted to the ITQ codes: scale mu0 to their error per bit
                state.mu0 = self.mu0_scale * float(state.recon(state.Z).mean()) / self.n_bits
            mu0 = state.mu0
        else:
            mu0 = float(self.mu0)
        return mu0 * float(self.mu_factor) ** i

    # ------------------------------------------------------------------ extras
    def decode(self, bits) -> np.ndarray:
        """Reconstruct features from (N, L) 0/1 codes with the fitted linear decoder."""
        bits = np.asarray(bits, dtype=np.float32)
        return bits @ self.A_.T + self.c_


def _least_squares_decoder(X: np.ndarray, Z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(A, c) minimising sum_n ||x_n - A z_n - c||^2 (minimum-norm solution if Z is rank deficient)."""
    Za = np.hstack([Z.astype(np.float64), np.ones((len(Z), 1))])
    ZtX = (Za.astype(np.float32).T @ X).astype(np.float64)
    with threadpool_limits(1):  # a small system: BLAS threads only add overhead
        sol = np.linalg.lstsq(Za.T @ Za, ZtX, rcond=None)[0]
    return sol[:-1].T.copy(), sol[-1].copy()


class _MACState:
    """Arrays of one MAC run. SVMs are solved in a rotated space: X_aug = [X, 1] times the
    eigenvectors Q of X_aug^T X_aug (an orthogonal change of basis that keeps the SVM problem,
    bias regularisation included, and makes its Hessian close to diagonal)."""

    def __init__(self, X: np.ndarray, C: float):
        self.C = C
        self.X_aug = np.hstack([X.astype(np.float32, copy=False), np.ones((len(X), 1), dtype=np.float32)])
        self.X = self.X_aug[:, :-1]  # a view: float32 X without a second copy
        _, Q = np.linalg.eigh(self.X_aug.T @ self.X_aug)
        self.Q = np.ascontiguousarray(Q[:, ::-1])  # top principal directions first
        self.X_rot = self.X_aug @ self.Q
        self.X_rot_sq = self.X_rot * self.X_rot
        self.x_sq = (X.astype(np.float64) ** 2).sum(axis=1)
        self.Z_fit = None  # codes each bit's SVM was last fitted to (None: never)

    # hash function -----------------------------------------------------------
    def init_from_linear(self, W, b):
        """Start h at sign(X W + b), rescaled per bit to minimise the SVM objective along it."""
        W_aug = np.vstack([W, b[None]]).astype(np.float64)
        V = self.Q.T.astype(np.float64) @ W_aug
        XV = (self.X_rot @ V.astype(np.float32)).astype(np.float64)
        Y = np.where(XV > 0, 1.0, -1.0)
        t = exact_line_search(np.zeros_like(V), V, np.zeros_like(XV), XV, Y, self.C)
        self.V = V * np.where(t > 0, t, 1.0)
        self.W_aug = self.Q.astype(np.float64) @ self.V
        self.H = (self.X_aug @ self.W_aug.astype(np.float32) > 0).astype(np.uint8)

    def h_step(self, tol, max_newton, max_cg):
        """Refit the SVMs of the bits whose codes changed; keep a new one only if it does not
        increase that bit's mismatches with Z."""
        if self.Z_fit is None:
            bits = np.arange(self.Z.shape[1])
        else:
            bits = np.flatnonzero((self.Z != self.Z_fit).any(axis=0))
        if len(bits) == 0:
            return 0, 0, {"n_newton": 0, "n_cg": 0}
        Zb = self.Z[:, bits]
        V, info = fit_squared_hinge_svm(
            self.X_rot, 2.0 * Zb - 1.0, self.C, self.V[:, bits], tol=tol, max_newton=max_newton, max_cg=max_cg, X_sq=self.X_rot_sq,
            precond_block=_PRECOND_BLOCK,
        )
        W_aug = self.Q.astype(np.float64) @ V
        H_new = (self.X_aug @ W_aug.astype(np.float32) > 0).astype(np.uint8)
        ok = (H_new != Zb).sum(axis=0) <= (self.H[:, bits] != Zb).sum(axis=0)
        self.V[:, bits[ok]], self.W_aug[:, bits[ok]], self.H[:, bits[ok]] = V[:, ok], W_aug[:, ok], H_new[:, ok]
        if self.Z_fit is None:
            self.Z_fit = self.Z.copy()
        else:
            self.Z_fit[:, bits] = Zb
        return len(bits), int(ok.sum()), info

    # decoder -------------------------------------------------------------------
    def f_step(self):
        self.A, self.c = _least_squares_decoder(self.X, self.Z)
        self.G = self.A.T @ self.A
        A32 = self.A.astype(np.float32)
        self.q = (self.X @ A32).astype(np.float64) - self.c @ self.A  # A^T (x_n - c)
        self.xc_sq = self.x_sq - 2 * (self.X @ self.c.astype(np.float32)).astype(np.float64) + self.c @ self.c

    def recon(self, Z) -> np.ndarray:
        """||x_n - f(z_n)||^2 per point, from the code-space expansion."""
        Zf = Z.astype(np.float64)
        return np.maximum(self.xc_sq - 2 * (Zf * self.q).sum(axis=1) + ((Zf @ self.G) * Zf).sum(axis=1), 0.0)

    def e_q(self, mu) -> float:
        return float(self.recon(self.Z).sum() + mu * (self.Z != self.H).sum())

    # codes ---------------------------------------------------------------------
    def z_step(self, mu, exact_max_bits) -> int:
        with threadpool_limits(1):  # (N, L) x (L, L) products: faster single-threaded
            Z = zstep(self.q, self.G, self.H, self.Z, mu, h_err=self.recon(self.H), exact_max_bits=exact_max_bits)
        changed = int((Z != self.Z).sum())
        self.Z = Z
        return changed
