"""cbir's binary autoencoder beside a second, independent implementation of the paper's algorithm.

    uv run python benchmarks/ba_fidelity.py --features results/mnist/seed0/features/smallcnn.parquet
    uv run python benchmarks/ba_fidelity.py --features F --bits 24 48 --seeds 0 1 2 --train-sample 10000

The reference below is written from the paper (Carreira-Perpiñán & Raziperchikolaei, CVPR 2015,
Fig. 1 and section 3) and the procedure of the authors' MAC code (hnanhtuan/Gemb, BA/auxiliary:
ba.m, Zrelaxed.m, Zaltopt.m, optenc.m, linftrain.m); it shares no code with
:mod:`cbir.hashing.ba` (scikit-learn's LinearSVC, which is LIBLINEAR, for the hash functions;
numpy for the rest). Per MAC iteration, for each mu of the schedule:

1. f step: the decoder by unregularised least squares on the current codes Z;
2. h step: one linear SVM per bit (LIBLINEAR ``-s 2 -B 1 -c 100 -e 0.001``: L2-regularised
   squared hinge, primal, bias as a regularised feature of value 1), only for bits whose codes
   changed; a bit whose codes are all equal gets the constant function;
3. validation: 200 training points (kept in the training set), ground truth their
   K = floor(0.002 N) Euclidean nearest training points (themselves included), score the
   precision of the K nearest by Hamming distance (stable order). If it is lower than the last
   accepted score (0 at the start), f, h and Z return to the previous iterate and the schedule
   skips to the first value after the current mu's last occurrence;
4. Z step (L >= 16, the authors' alternating path): the relaxed problem over [0, 1]^L solved by
   projected gradient from the last relaxed solution, rounded by the authors' sequential greedy
   truncation (bit 1..L, each set to the better of 0 and 1 with the later bits still relaxed),
   then single-bit alternating optimisation until L consecutive bits do not change (a tie
   flips, as in Zaltopt), at most 100 sweeps;
5. stop when Z = h(X) or the schedule runs out.

Features are rescaled to [0, 1] as ba.m does (``--preprocess range``; the schedule's mu refer to
that scale); start: ITQ's codes (50 iterations, seeded). One deliberate difference from ba.m: when
a step is undone, the restored hash function's own codes h(X) start the next Z step (ba.m keeps
the undone one's). The cbir variants printed beside it are option sets of
:class:`cbir.hashing.BinaryAutoencoder` (AUTHORS: the options that follow the same procedure).
Prints, per code length and implementation, mean ± sd over the seeds of label mAP@1000,
neighbours tie-aware P@K, MAC iterations and fit time, then the differences cbir − reference.
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
from bench_hashing import load_data, machine, mean_sd, scores
from sklearn.exceptions import ConvergenceWarning
from sklearn.svm import LinearSVC

from cbir.hashing import make_hasher
from cbir.metrics import neighbour_relevance

SCHEDULE = 1e-5 * 2.0 ** np.arange(1, 21)  # the authors' mu = 1e-5 * 2.^(1:20) on [0, 1]-range features
AUTHORS = {
    "zstep": "authors",
    "mu_schedule": list(SCHEDULE),
    "n_validation": 200,
    "validation_style": "authors",
    "reject_worse_svm": False,
    "svm_tol": 1e-3,
    "svm_max_newton": None,
    "svm_max_cg": None,
}
CBIR_VARIANTS = {
    "cbir (authors' options)": AUTHORS,
    "cbir (authors' options, cbir's Z step)": {**AUTHORS, "zstep": "best"},
    "cbir (defaults)": {},
}


# --------------------------------------------------------------------------- the reference
def reference_itq(X: np.ndarray, n_bits: int, seed: int, n_iter: int = 50) -> np.ndarray:
    """ITQ's 0/1 codes (Gong & Lazebnik): centred PCA to n_bits, rotation by Procrustes updates."""
    Xc = X - X.mean(axis=0)
    _, vectors = np.linalg.eigh(Xc.T @ Xc)
    V = Xc @ vectors[:, ::-1][:, :n_bits]
    R, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((n_bits, n_bits)))
    for _ in range(n_iter):
        B = np.where(V @ R >= 0, 1.0, -1.0)
        U, _, Wt = np.linalg.svd(B.T @ V)
        R = Wt.T @ U.T
    return (V @ R >= 0).astype(np.uint8)


def decoder(Z: np.ndarray, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """f(z) = A z + c by least squares."""
    Za = np.hstack([Z, np.ones((len(Z), 1))])
    sol = np.linalg.lstsq(Za, X, rcond=None)[0]
    return sol[:-1].T, sol[-1]


def svm_bit(X: np.ndarray, z: np.ndarray) -> tuple[np.ndarray, float]:
    """One hash function: LIBLINEAR -s 2 -B 1 -c 100 -e 0.001 on (X, z)."""
    if z.min() == z.max():  # one class: the constant function
        return np.zeros(X.shape[1]), 1.0 if z[0] else -1.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        svm = LinearSVC(C=100.0, loss="squared_hinge", dual=False, tol=1e-3, intercept_scaling=1.0, max_iter=1000).fit(X, z)
    return svm.coef_[0], float(svm.intercept_[0])


def box_qp(q, G, V, mu, start, n_iter=300) -> np.ndarray:
    """argmin over [0, 1]^L of -2 z.q + z'Gz + mu |z - v|^2 per row, by accelerated projected gradient."""
    step = 1.0 / (2 * (np.linalg.eigvalsh(G)[-1] + mu))
    z = y = np.clip(start, 0, 1)
    t = 1.0
    for _ in range(n_iter):
        z_new = np.clip(y - step * (2 * (y @ G - q) + 2 * mu * (y - V)), 0, 1)
        t_new = (1 + np.sqrt(1 + 4 * t * t)) / 2
        y = z_new + (t - 1) / t_new * (z_new - z)
        z, t = z_new, t_new
    return z


def objective_delta(Z, GZ, q, G, V, mu, i, value) -> np.ndarray:
    """Change of -2 z.q + z'Gz + mu |z - v|^2 (per row) when z_i becomes ``value``."""
    d = value - Z[:, i]
    return d * (2 * GZ[:, i] - 2 * q[:, i] + G[i, i] * d) + mu * ((value - V[:, i]) ** 2 - (Z[:, i] - V[:, i]) ** 2)


def reference_zstep(q, G, H, mu, relaxed_start, max_sweeps=100):
    """The authors' alternating-optimisation Z step: relaxed QP, greedy truncation, bit flips."""
    V = H.astype(np.float64)
    relaxed = box_qp(q, G, V, mu, relaxed_start)
    Z = relaxed.copy()
    GZ = Z @ G
    for i in range(Z.shape[1]):  # sequential greedy truncation
        value = (objective_delta(Z, GZ, q, G, V, mu, i, 1.0) < objective_delta(Z, GZ, q, G, V, mu, i, 0.0)).astype(np.float64)
        GZ += np.outer(value - Z[:, i], G[i])
        Z[:, i] = value
    n_bits = Z.shape[1]
    unchanged = np.zeros(len(Z), dtype=int)
    for step in range(max_sweeps * n_bits):
        active = unchanged < n_bits
        if not active.any():
            break
        i = step % n_bits
        flip = active & (objective_delta(Z, GZ, q, G, V, mu, i, 1.0 - Z[:, i]) <= 0)  # e2 <= e1: flip
        d = np.where(flip, 1.0 - 2 * Z[:, i], 0.0)
        GZ += np.outer(d, G[i])
        Z[:, i] += d
        unchanged = np.where(flip, 0, np.where(active, unchanged + 1, unchanged))
    return Z.astype(np.uint8), relaxed


def knn_precision(train_codes, val_codes, truth, k) -> float:
    """Precision of the k nearest training codes by Hamming distance (stable order) against the
    k Euclidean nearest training points."""
    d = (val_codes[:, None, :] != train_codes[None, :, :]).sum(axis=2)
    found = np.argsort(d, axis=1, kind="stable")[:, :k]
    return float(np.mean([len(np.intersect1d(f, t)) / k for f, t in zip(found, truth)]))


class ReferenceBA:
    """The paper's binary autoencoder by the authors' MAC procedure (module docstring)."""

    def __init__(self, n_bits: int, random_state: int = 0, mus=SCHEDULE, n_validation: int = 200):
        if n_bits < 16:
            raise ValueError("the reference implements the authors' alternating Z step (L >= 16) only")
        self.n_bits, self.random_state, self.mus, self.n_validation = n_bits, random_state, np.asarray(mus), n_validation

    def fit(self, X, y=None):
        X = np.asarray(X, dtype=np.float64)
        low, extent = X.min(axis=0), (X.max(axis=0) - X.min(axis=0)).max()
        Xn = (X - low) / extent
        rng = np.random.default_rng(self.random_state)
        val = Xn[rng.choice(len(Xn), self.n_validation, replace=False)]
        k = max(1, int(0.002 * len(Xn)))
        dist = (val**2).sum(1)[:, None] + (Xn**2).sum(1)[None, :] - 2 * val @ Xn.T
        truth = np.argsort(dist, axis=1, kind="stable")[:, :k]

        L = self.n_bits
        Z = reference_itq(Xn, L, self.random_state)
        old_Z, W, b = np.zeros_like(Z), np.zeros((Xn.shape[1], L)), np.zeros(L)
        relaxed, old_relaxed, old_P, self.n_iter_ = Z.astype(np.float64), None, 0.0, 0
        i = 0
        while i < len(self.mus):
            A, c = decoder(Z.astype(np.float64), Xn)
            changed = np.flatnonzero((Z != old_Z).any(axis=0))
            saved = (W.copy(), b.copy())
            for bit in changed:
                W[:, bit], b[bit] = svm_bit(Xn, Z[:, bit])
            H = (Xn @ W + b > 0).astype(np.uint8)
            self.n_iter_ += 1
            precision = knn_precision(H, (val @ W + b > 0).astype(np.uint8), truth, k)
            if precision < old_P:  # undo the step, skip this mu
                W, b = saved
                Z, relaxed = old_Z, old_relaxed
                A, c = decoder(Z.astype(np.float64), Xn)
                H = (Xn @ W + b > 0).astype(np.uint8)
                i = int(np.flatnonzero(self.mus == self.mus[i])[-1]) + 1
                if i >= len(self.mus):
                    break
            else:
                old_P = precision
            old_Z, old_relaxed = Z, relaxed
            q = (Xn - c) @ A
            Z, relaxed = reference_zstep(q, A.T @ A, H, self.mus[i], relaxed if relaxed is not None else H.astype(np.float64))
            if (Z == H).all():
                break
            i += 1
        self.W_ = W / extent
        self.b_ = b - low @ self.W_
        return self

    def transform(self, X) -> np.ndarray:
        return (np.asarray(X, dtype=np.float64) @ self.W_ + self.b_ > 0).astype(np.uint8)


# --------------------------------------------------------------------------- the comparison
def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--features", help="cbir descriptor Parquet file (default: synthetic features)")
    parser.add_argument("--train-sample", type=int, default=10_000, help="fit on a seeded sample of this many training rows")
    parser.add_argument("--bits", type=int, nargs="+", default=[24, 48])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--neighbours", type=int, default=50, help="K of the neighbours ground truth")
    parser.add_argument("--n-train", type=int, default=10_000, help="synthetic features: training rows")
    parser.add_argument("--n-query", type=int, default=1_000, help="synthetic features: query rows")
    parser.add_argument("--dim", type=int, default=2048, help="synthetic features: dimension")
    parser.add_argument("--data-seed", type=int, default=0)
    args = parser.parse_args(argv)
    args.preprocess = "range"
    train, train_y, db, db_y, query, query_y = load_data(args)
    neighbours = neighbour_relevance(query, db, args.neighbours)
    print(f"machine: {machine()}")
    print(f"fit on {train.shape[0]} x {train.shape[1]} features ([0, 1] range), {len(db)} database items, {len(query)} queries, seeds {args.seeds}")
    implementations = {"reference (paper, authors' procedure)": lambda L, seed: ReferenceBA(L, random_state=seed)}
    for name, options in CBIR_VARIANTS.items():
        implementations[name] = lambda L, seed, options=options: make_hasher("ba", L, random_state=seed, **options)
    print("\n| L | implementation | label mAP@1000 | nbr P@%d | MAC iterations | fit (s) |" % args.neighbours)
    print("|---:|:---|---:|---:|---:|---:|")
    table = {}
    for L in args.bits:
        for name, build in implementations.items():
            rows = []
            for seed in args.seeds:
                t0 = time.perf_counter()
                model = build(L, seed).fit(train, train_y)
                seconds = time.perf_counter() - t0
                rows.append({**scores(model, db, db_y, query, query_y, neighbours, args.neighbours), "iters": model.n_iter_, "seconds": seconds})
            table[L, name] = rows
            cells = [mean_sd([r[key] for r in rows]) for key in ("label mAP@1000", f"nbr P@{args.neighbours}", "iters", "seconds")]
            print(f"| {L} | {name} | " + " | ".join(cells) + " |", flush=True)
    print("\ncbir − reference, per seed then mean:")
    for L in args.bits:
        reference = table[L, next(iter(implementations))]
        for name in CBIR_VARIANTS:
            for key in ("label mAP@1000", f"nbr P@{args.neighbours}"):
                diffs = [c[key] - r[key] for c, r in zip(table[L, name], reference)]
                print(f"  L={L} {name}: {key} {' '.join(f'{d:+.2f}' for d in diffs)} (mean {np.mean(diffs):+.2f})")


if __name__ == "__main__":
    main()
