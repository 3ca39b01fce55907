"""Binary autoencoder hashing (Carreira-Perpiñán & Raziperchikolaei, CVPR 2015), trained by MAC.

Encoder h(x) = step(W^T x + b) in {0,1}^L, linear decoder f(z) = A z + c. The method of auxiliary
coordinates introduces the codes Z as variables and minimises, for increasing mu,

    E_Q(h, f, Z; mu) = sum_n ||x_n - f(z_n)||^2 + mu ||z_n - h(x_n)||^2

by alternating (i) the h step (one linear SVM per bit on (X, Z[:, l])) and f step (least squares),
and (ii) the Z step (per point, in code space). It stops when Z = h(X), or when the mu schedule
(or max_iter) runs out. Design choices where the paper leaves room are documented on
:class:`BinaryAutoencoder`; the options that reproduce the authors' code are marked there.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping

import numpy as np
import pandas as pd
from sklearn.utils import check_random_state

from cbir.hashing.base import LinearHasher, blas_threads, single_threaded_blas
from cbir.hashing.baselines import ITQ, LSH, PCAH
from cbir.hashing.svm import exact_line_search, fit_squared_hinge_svm
from cbir.hashing.validation import hamming_distances, tie_aware_precision_at_k
from cbir.hashing.zstep import zstep, zstep_authors
from cbir.metrics import neighbour_relevance

log = logging.getLogger(__name__)

_PRECOND_BLOCK = 128  # SVM preconditioner: dense block over the top principal directions
DEVICES = ("cpu", "auto", "cuda", "torch-cpu")
STARTS = {"itq": ITQ, "pca": PCAH, "lsh": LSH}  # init -> the hasher whose codes BA starts from
INITS = tuple(STARTS)
ZSTEPS = ("best", "authors")
VALIDATION_STYLES = ("held_out", "authors")


class BinaryAutoencoder(LinearHasher):
    """Binary autoencoder hash function learned with the method of auxiliary coordinates.

    Parameters
    ----------
    n_bits : code length L (1..64).
    C : SVM regularisation (LIBLINEAR L2-regularised squared-hinge, bias as a regularised
        feature of value 1 -- ``-s 2 -B 1``), as in the paper: 100.
    max_iter : at most this many MAC iterations (one Z step each).
    mu_schedule : the penalties mu, one MAC iteration each, in order:

        * None (default): geometric, ``mu_0 = mu0_scale * e0 / L`` with e0 the mean squared
          reconstruction error of the initial codes under their least-squares decoder (so the
          schedule does not depend on the scale of X), times ``mu_factor`` per iteration, up to
          max_iter values. A flip away from h(x_n) never pays once mu > ||x_n - f(h(x_n))||^2,
          so mu_0 well below the error per bit lets Z move freely at first and the growth ends
          the run.
        * a sequence of values, used as given; repeats are allowed (several iterations at one mu,
          as in the authors' scripts).
        * a mapping ``{start, factor, count}``: ``start * factor ** i`` for i = 0..count-1 (the
          authors' ``1e-5 * 2 .^ (1:20)`` on [0, 1]-range features is start 2e-5, factor 2,
          count 20).

        The schedule in use is logged and is the ``mu`` column of ``trace_``.
    mu0_scale, mu_factor : the default schedule (above).
    n_validation : 0 (default) or the number of training points drawn for the authors'
        validation rollback (their code: 200), seeded by random_state. Ground truth: their
        K = max(1, floor(0.002 N)) Euclidean nearest training points; score: tie-aware
        precision@K of the Hamming ranking of the training codes h(X) for h(v). After each h
        step, if it is lower than the last accepted one, h, f and Z return to the previous
        iterate and the schedule skips to the first value after the current mu's last
        occurrence; the Z step then runs at that mu.
    validation_style : how the validation points are used.

        * "held_out" (default): removed from the training set, and the first h step is held
          against the initial hash function's score like every later one (it can be undone).
        * "authors": as the authors' ``ba.m``: the points stay in the training set (each is
          then its own nearest neighbour) and the first h step is accepted without a
          comparison (their last accepted score starts at 0).
    exact_max_bits : exact (enumerative) Z step for L <= this, else an approximate one (``zstep``).
    zstep : the approximate Z step for L > exact_max_bits.

        * "best" (default): relaxation, rounding and greedy bit flips, also from h(x_n) and from
          the previous z_n, keeping the best of the three: never worse than either.
        * "authors": their Zrelaxed + Zaltopt: the relaxation warm-started at its previous
          solution, sequential greedy truncation, then single-bit alternating optimisation
          from there, not compared with h(x_n) or z_n (:func:`cbir.hashing.zstep.zstep_authors`).
          Numpy only (device "cpu").
    svm_tol, svm_max_newton, svm_max_cg : the h step. Each SVM stops by LIBLINEAR's rule with
        eps = svm_tol (LIBLINEAR's default 0.01; the authors call it with 1e-3) or after
        svm_max_newton truncated-Newton steps of at most svm_max_cg conjugate-gradient steps
        each. The default budget (3, 10) solves inexactly, relying on warm starts across MAC
        iterations; None for both solves to the tolerance like LIBLINEAR (the authors' h step:
        svm_tol=1e-3, svm_max_newton=None, svm_max_cg=None). Either way only bits whose codes
        changed since their last fit are retrained, warm-started.
    reject_worse_svm : keep a bit's new SVM only if it does not increase that bit's mismatches
        sum_n |z_nl - h_l(x_n)| (the SVM minimises a surrogate, the squared hinge, so its
        solution can mismatch more); this makes E_Q non-increasing at fixed mu. False: always
        take the new SVM, as the authors do.
    init : the initial codes and hash function: "itq" (default; the paper's and the authors'
        start), "pca" (PCA hashing: the signs of the top L principal components) or "lsh"
        (signs of seeded random projections). BA only moves from its start as far as lowering
        the reconstruction error pays, so the start shows in the codes: ITQ's balanced rotation
        keeps classes apart, PCA's top directions keep Euclidean neighbours (measurements in
        docs/hashing-notes.md).
    itq_iter : ITQ iterations of the "itq" initialisation.
    device : "cpu" (default) -- this numpy implementation; "cuda" -- the same steps in torch on
        the GPU; "auto" -- "cuda" when torch sees a GPU, else "cpu"; "torch-cpu" -- the torch
        implementation on the CPU (to check it against the numpy one). torch is imported only
        for the torch devices.
    random_state : passed to the initialisation, so the initial codes are those of
        ``ITQ(n_bits, random_state=random_state)`` (or PCAH, LSH) fitted on the training points;
        also draws the validation points. Nothing else is random.

    Attributes
    ----------
    W_ (D, L), b_ (L,) : the hash function, bits = (X @ W_ + b_ > 0).
    A_ (D, L), c_ (D,) : the linear decoder, refitted by least squares on h(X_train) at the end.
    trace_ : pandas DataFrame, one row per iteration (see ``_fit``).
    mu_schedule_ : the schedule as used (float64 array).
    validation_indices_ : rows of the training X held out for validation (empty without).
    n_iter_ : iterations run; converged_ : whether Z = h(X) was reached.
    n_features_in_ : D.

    Notes
    -----
    The initial projection, rescaled to minimise each bit's SVM objective along it, is the warm
    start of the first h step. Z step: exact for L <= exact_max_bits (all codes within the Hamming
    radius floor(||x_n - f(h(x_n))||^2 / mu) of h(x_n)); otherwise the box relaxation is solved,
    rounded and improved by single bit flips, and the best of that, h(x_n) and the previous z_n
    (each also improved by flips) is kept -- never worse than the previous code.
    """

    def __init__(
        self,
        n_bits: int = 32,
        *,
        C: float = 100.0,
        max_iter: int = 60,
        mu_schedule=None,
        mu0_scale: float = 0.05,
        mu_factor: float = 1.5,
        n_validation: int = 0,
        validation_style: str = "held_out",
        exact_max_bits: int = 16,
        zstep: str = "best",
        svm_tol: float = 0.01,
        svm_max_newton: int | None = 3,
        svm_max_cg: int | None = 10,
        reject_worse_svm: bool = True,
        init: str = "itq",
        itq_iter: int = 50,
        device: str = "cpu",
        random_state=None,
    ):
        self.n_bits = n_bits
        self.C = C
        self.max_iter = max_iter
        self.mu_schedule = mu_schedule
        self.mu0_scale = mu0_scale
        self.mu_factor = mu_factor
        self.n_validation = n_validation
        self.validation_style = validation_style
        self.exact_max_bits = exact_max_bits
        self.zstep = zstep
        self.svm_tol = svm_tol
        self.svm_max_newton = svm_max_newton
        self.svm_max_cg = svm_max_cg
        self.reject_worse_svm = reject_worse_svm
        self.init = init
        self.itq_iter = itq_iter
        self.device = device
        self.random_state = random_state

    _needs_n_bits_le_features = True

    # ------------------------------------------------------------------ fitting
    def _fit(self, X):
        """Run MAC. ``trace_`` columns, per iteration (all sums over the training points):

        mu : the penalty of the iteration's Z step;
        E_BA : sum_n ||x_n - f(h(x_n))||^2 after the h and f steps, the hash function's own codes
            decoded by the current f (the paper's binary autoencoder error);
        E_Q_start / E_Q_hf : E_Q at the start of the iteration and after the h and f steps;
        E_Q_recon, E_Q_penalty, E_Q : after the Z step, sum_n ||x_n - f(z_n)||^2,
            mu * ||Z - h(X)||^2 (mu times the mismatches) and their sum;
        mismatches : entries with Z != h(X) after the Z step; z_changed : entries the Z step changed;
        svm_trained / svm_accepted : bits retrained in the h step / whose new SVM was kept;
        newton_steps, cg_steps : SVM solver work;
        val_precision : tie-aware precision@K on the validation points after the h step (NaN
            without validation); rolled_back : whether that h step was undone;
        seconds : wall time of the iteration.
        """
        if int(self.max_iter) < 1:
            raise ValueError(f"max_iter must be >= 1, got {self.max_iter}")
        if self.init not in INITS:
            raise ValueError(f"unknown init {self.init!r}; expected one of {INITS}")
        if self.zstep not in ZSTEPS:
            raise ValueError(f"unknown zstep {self.zstep!r}; expected one of {ZSTEPS}")
        L = self.n_bits
        X_fit, validator = self._validation(X)
        state = _make_state(self.device, X_fit, float(self.C))
        options = {"n_iter": self.itq_iter} if self.init == "itq" else {}
        start = STARTS[self.init](L, random_state=self.random_state, **options).fit(X_fit)
        state.init_from_linear(start.W_, start.b_)
        mus = self._mu_values(state.recon_sum(state.Z) / len(X_fit))
        log.info("BA: %d bits, %d x %d training features, device %s, mu schedule (%d values): %s",
                 L, *X_fit.shape, state.name, len(mus), np.array2string(mus, precision=3, separator=", ", max_line_width=1 << 16))
        accepted_precision = validator(state.hash_codes(), state.weights()) if validator else np.nan
        if validator:
            log.info("validation (%s): %d points, tie-aware precision@%d of the %s initialisation %.4f",
                     self.validation_style, validator.n_points, validator.k, self.init, accepted_precision)
            if self.validation_style == "authors":
                accepted_precision = 0.0  # their first h step is taken whatever it scores

        rows, j, converged = [], 0, False
        while j < len(mus) and len(rows) < int(self.max_iter):
            t0 = time.perf_counter()
            e_start = state.e_q(mus[j])
            snapshot = state.snapshot() if validator else None
            trained, accepted, svm_info = state.h_step(
                tol=self.svm_tol, max_newton=self.svm_max_newton, max_cg=self.svm_max_cg, reject_worse=self.reject_worse_svm,
            )
            state.f_step()
            precision, rolled_back = np.nan, False
            if validator:
                precision = validator(state.hash_codes(), state.weights())
                if precision < accepted_precision:
                    state.restore(snapshot)
                    rolled_back = True
                    j = int(np.flatnonzero(mus == mus[j])[-1]) + 1
                else:
                    accepted_precision = precision
            skip_z = j >= len(mus)  # rolled back past the last mu: nothing left to try
            mu = mus[min(j, len(mus) - 1)]
            e_hf = state.e_q(mu)
            e_ba = state.recon_sum(state.H)
            z_changed = 0 if skip_z else state.z_step(mu, self.exact_max_bits, self.zstep)
            e_recon = state.recon_sum(state.Z)
            mismatches = state.mismatches()
            rows.append(dict(
                iteration=len(rows), mu=mu, E_BA=e_ba, E_Q_start=e_start, E_Q_hf=e_hf, E_Q_recon=e_recon,
                E_Q_penalty=mu * mismatches, E_Q=e_recon + mu * mismatches, mismatches=mismatches, z_changed=z_changed,
                svm_trained=trained, svm_accepted=accepted, newton_steps=svm_info["n_newton"], cg_steps=svm_info["n_cg"],
                val_precision=precision, rolled_back=rolled_back, seconds=time.perf_counter() - t0,
            ))
            _log_iteration(rows[-1])
            j += 1
            if skip_z:
                break
            if mismatches == 0:
                converged = True
                break

        self.trace_ = pd.DataFrame(rows)
        self.mu_schedule_ = mus
        self.n_iter_ = len(rows)
        self.converged_ = converged
        W_aug = state.weights()
        self.W_ = W_aug[:-1].astype(np.float32)
        self.b_ = W_aug[-1].astype(np.float32)
        self.A_, self.c_ = _least_squares_decoder(X_fit.astype(np.float32, copy=False), state.hash_codes())
        log.info("BA: %s after %d iterations", "converged (Z = h(X))" if converged else "stopped", self.n_iter_)

    def _validation(self, X):
        """(training points, validator or None); sets ``validation_indices_`` (rows of X drawn for
        validation, sorted; empty without validation)."""
        if self.validation_style not in VALIDATION_STYLES:
            raise ValueError(f"unknown validation_style {self.validation_style!r}; expected one of {VALIDATION_STYLES}")
        n_val = int(self.n_validation or 0)
        if n_val < 0 or (n_val and len(X) - n_val < max(self.n_bits, 2)):
            raise ValueError(f"n_validation={n_val} leaves too few of the {len(X)} training points")
        rng = check_random_state(self.random_state)
        self.validation_indices_ = np.sort(rng.choice(len(X), n_val, replace=False)) if n_val else np.zeros(0, dtype=np.int64)
        if n_val == 0:
            return X, None
        if self.validation_style == "authors":
            return X, _Validator(X, X[self.validation_indices_])
        held_out = np.zeros(len(X), dtype=bool)
        held_out[self.validation_indices_] = True
        return X[~held_out], _Validator(X[~held_out], X[held_out])

    def _mu_values(self, e0: float) -> np.ndarray:
        schedule = self.mu_schedule
        if schedule is None:
            start = self.mu0_scale * e0 / self.n_bits
            mus = start * float(self.mu_factor) ** np.arange(int(self.max_iter))
        elif isinstance(schedule, Mapping):
            missing = {"start", "factor", "count"} - set(schedule)
            if missing or len(schedule) != 3:
                raise ValueError(f"mu_schedule mapping needs exactly the keys start, factor, count; got {sorted(schedule)}")
            mus = float(schedule["start"]) * float(schedule["factor"]) ** np.arange(int(schedule["count"]))
        else:
            mus = np.asarray(schedule, dtype=np.float64).ravel()
        if len(mus) == 0 or not (np.isfinite(mus) & (mus > 0)).all():
            raise ValueError(f"mu_schedule must give one or more positive values, got {schedule!r}")
        return mus

    # ------------------------------------------------------------------ extras
    def decode(self, bits) -> np.ndarray:
        """Reconstruct features from (N, L) 0/1 codes with the fitted linear decoder."""
        bits = np.asarray(bits, dtype=np.float32)
        return bits @ self.A_.T + self.c_


def _log_iteration(row: dict) -> None:
    log.info(
        "iter %d  mu %.4g  E_BA %.6g  E_Q %.6g (recon %.6g + penalty %.4g)  Z changed %d  mismatches %d  "
        "SVMs %d/%d  val P@K %.4f%s  %.2f s",
        row["iteration"], row["mu"], row["E_BA"], row["E_Q"], row["E_Q_recon"], row["E_Q_penalty"], row["z_changed"],
        row["mismatches"], row["svm_accepted"], row["svm_trained"], row["val_precision"],
        "  ROLLED BACK" if row["rolled_back"] else "", row["seconds"],
    )


class _Validator:
    """Tie-aware precision@K of h(validation points) ranking h(training points), K = the authors'
    max(1, floor(0.002 N)) Euclidean neighbours among the N training points."""

    def __init__(self, X_train: np.ndarray, X_val: np.ndarray):
        self.k = max(1, int(0.002 * len(X_train)))
        self.n_points = len(X_val)
        self.relevant = neighbour_relevance(X_val, X_train, self.k)
        self.X_aug = np.hstack([X_val.astype(np.float32), np.ones((len(X_val), 1), dtype=np.float32)])

    def __call__(self, train_codes: np.ndarray, W_aug: np.ndarray) -> float:
        val_codes = self.X_aug @ W_aug.astype(np.float32) > 0
        return float(tie_aware_precision_at_k(hamming_distances(val_codes, train_codes), self.relevant, self.k).mean())


def _make_state(device: str, X: np.ndarray, C: float):
    if device not in DEVICES:
        raise ValueError(f"unknown device {device!r}; expected one of {DEVICES}")
    if device == "cpu":
        return _MACState(X, C)
    from cbir.hashing.ba_torch import TorchMACState, resolve_device

    torch_device = resolve_device(device)
    return _MACState(X, C) if torch_device is None else TorchMACState(X, C, torch_device, precond_block=_PRECOND_BLOCK)


def _least_squares_decoder(X: np.ndarray, Z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(A, c) minimising sum_n ||x_n - A z_n - c||^2 (minimum-norm solution if Z is rank deficient)."""
    Za = np.hstack([Z.astype(np.float64), np.ones((len(Z), 1))])
    ZtX = (Za.astype(np.float32).T @ X).astype(np.float64)
    with single_threaded_blas():  # a small system: BLAS threads only add overhead
        sol = np.linalg.lstsq(Za.T @ Za, ZtX, rcond=None)[0]
    return sol[:-1].T.copy(), sol[-1].copy()


class _MACState:
    """Arrays of one MAC run (numpy). SVMs are solved in a rotated space: X_aug = [X, 1] times the
    eigenvectors Q of X_aug^T X_aug (an orthogonal change of basis that keeps the SVM problem,
    bias regularisation included, and makes its Hessian close to diagonal)."""

    name = "cpu (numpy)"
    _SNAPSHOT = ("V", "W_aug", "H", "Z", "Z_fit", "A", "c", "G", "q", "xc_sq", "relaxed")

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
        self.relaxed = None  # the authors' Z step: its last relaxed solution (None: none yet)

    # hash function -----------------------------------------------------------
    def init_from_linear(self, W, b):
        """Start h at sign(X W + b), rescaled per bit to minimise the SVM objective along it;
        Z = h(X) and f fitted to it."""
        W_aug = np.vstack([W, b[None]]).astype(np.float64)
        V = self.Q.T.astype(np.float64) @ W_aug
        XV = (self.X_rot @ V.astype(np.float32)).astype(np.float64)
        Y = np.where(XV > 0, 1.0, -1.0)
        t = exact_line_search(np.zeros_like(V), V, np.zeros_like(XV), XV, Y, self.C)
        self.V = V * np.where(t > 0, t, 1.0)
        self.W_aug = self.Q.astype(np.float64) @ self.V
        self.H = (self.X_aug @ self.W_aug.astype(np.float32) > 0).astype(np.uint8)
        self.Z = self.H.copy()
        self.f_step()

    def h_step(self, tol, max_newton, max_cg, reject_worse=True):
        """Refit the SVMs of the bits whose codes changed; with ``reject_worse``, keep a new one
        only if it does not increase that bit's mismatches with Z."""
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
        if reject_worse:
            ok = (H_new != Zb).sum(axis=0) <= (self.H[:, bits] != Zb).sum(axis=0)
        else:
            ok = np.ones(len(bits), dtype=bool)
        self.V[:, bits[ok]], self.W_aug[:, bits[ok]], self.H[:, bits[ok]] = V[:, ok], W_aug[:, ok], H_new[:, ok]
        if self.Z_fit is None:
            self.Z_fit = self.Z.copy()
        else:
            self.Z_fit[:, bits] = Zb
        return len(bits), int(ok.sum()), info

    def hash_codes(self) -> np.ndarray:
        return self.H

    def weights(self) -> np.ndarray:
        return self.W_aug

    def mismatches(self) -> int:
        return int((self.Z != self.H).sum())

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

    def recon_sum(self, Z) -> float:
        return float(self.recon(Z).sum())

    def e_q(self, mu) -> float:
        return self.recon_sum(self.Z) + mu * self.mismatches()

    # codes ---------------------------------------------------------------------
    def z_step(self, mu, exact_max_bits, style="best") -> int:
        workers = blas_threads()  # the relaxed step's independent searches go side by side instead
        with single_threaded_blas():  # (N, L) x (L, L) products: faster single-threaded
            if style == "authors" and self.Z.shape[1] > exact_max_bits:
                start = self.H.astype(np.float64) if self.relaxed is None else self.relaxed
                Z, self.relaxed = zstep_authors(self.q, self.G, self.H, mu, start)
            else:
                Z = zstep(self.q, self.G, self.H, self.Z, mu, h_err=self.recon(self.H), exact_max_bits=exact_max_bits, workers=workers)
        changed = int((Z != self.Z).sum())
        self.Z = Z
        return changed

    # validation rollback ---------------------------------------------------------
    def snapshot(self) -> dict:
        return {name: None if getattr(self, name) is None else getattr(self, name).copy() for name in self._SNAPSHOT}

    def restore(self, snapshot: dict) -> None:
        for name, value in snapshot.items():
            setattr(self, name, value)
