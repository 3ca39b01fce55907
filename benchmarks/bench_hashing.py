"""Fit-time (and a quick mAP@1000) benchmark of the hashing methods.

    uv run python benchmarks/bench_hashing.py                      # synthetic CNN-like features
    uv run python benchmarks/bench_hashing.py --features feats.parquet --bits 32 48

Prints a Markdown table: per code length L and method, the fit time, BA's time relative to ITQ in
the same run, BA's MAC iterations and mAP@1000 (Hamming ranking, conventional and tie-aware, in %). Timings are wall-clock and
sensitive to other load on the machine; --repeat N reports the fastest of N fits. Synthetic features: N train
(= database) rows plus held-out query rows of a seeded 10-class set with low-rank class
structure, ReLU and L2 normalisation, 2,048-d. With --features, the "train" rows of a cbir
descriptor file are used for fitting, and its "query"/"database" rows (if any) for mAP, after
L2 normalisation as the pipeline does by default (--no-l2-normalize: raw features).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from cbir.hashing import HASHERS, make_hasher
from cbir.metrics import evaluate_distances
from cbir.search import make_index


def synthetic_cnn_features(n: int, dim: int = 2048, n_classes: int = 10, seed: int = 0):
    """Seeded CNN-like features: class centre + low-rank class-specific variation + isotropic
    noise in a 64-d latent space, a random linear map to ``dim`` with per-unit offsets, ReLU
    (about a third of the units active), L2 normalisation. Returns (X float32, labels int64)."""
    rng = np.random.default_rng(seed)
    latent, within_rank = 64, 6
    basis = rng.standard_normal((latent, dim)).astype(np.float32) / np.sqrt(latent)
    offsets = rng.normal(-0.4, 0.3, dim).astype(np.float32)
    centres = rng.standard_normal((n_classes, latent))
    factors = 0.7 * rng.standard_normal((n_classes, latent, within_rank))
    labels = rng.integers(n_classes, size=n)
    z = centres[labels] + np.einsum("nlr,nr->nl", factors[labels], rng.standard_normal((n, within_rank)))
    z += 0.6 * rng.standard_normal((n, latent))
    X = z.astype(np.float32) @ basis + offsets + 0.3 * rng.standard_normal((n, dim), dtype=np.float32)
    np.maximum(X, 0, out=X)
    X /= np.linalg.norm(X, axis=1, keepdims=True) + 1e-12
    return X, labels.astype(np.int64)


def map_at_k(model, database, db_labels, queries, q_labels, k: int = 1000) -> tuple[float, float]:
    """mAP@k and tie-aware mAP@k of Hamming ranking, as the pipeline's evaluation stage computes them."""
    index = make_index(model.encode(database), n_bits=model.n_bits)
    scores = evaluate_distances(index.pairwise(model.encode(queries)), query_labels=q_labels, database_labels=db_labels, k=k)
    return float(scores["ap"].mean()), float(scores["tie_aware_ap"].mean())


def load_data(args):
    if args.features is None:
        X, y = synthetic_cnn_features(args.n_train + args.n_query, args.dim, seed=args.seed)
        n = args.n_train
        return X[:n], X[:n], y[:n], X[n:], y[n:]
    from cbir.hashing.stage import l2_normalize
    from cbir.io import read_descriptors

    desc = read_descriptors(args.features)
    prepare = l2_normalize if args.l2_normalize else np.asarray
    train = prepare(desc.subset("train").values)
    db, query = desc.subset("database"), desc.subset("query")
    if len(db) and len(query):
        return train, prepare(db.values), db.label, prepare(query.values), query.label
    return train, None, None, None, None


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--features", help="cbir descriptor Parquet file (default: synthetic features)")
    parser.add_argument("--no-l2-normalize", dest="l2_normalize", action="store_false", help="with --features: hash the raw features")
    parser.add_argument("--bits", type=int, nargs="+", default=[12, 24, 32, 48])
    parser.add_argument("--methods", nargs="+", default=["ba", "itq", "pcah", "lsh", "sh"], choices=sorted(HASHERS))
    parser.add_argument("--n-train", type=int, default=10_000)
    parser.add_argument("--n-query", type=int, default=1_000)
    parser.add_argument("--dim", type=int, default=2048)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeat", type=int, default=1, help="fits per cell; the fastest is reported")
    parser.add_argument("--verbose", action="store_true", help="print BA's per-iteration trace")
    args = parser.parse_args(argv)

    train, db, db_labels, query, q_labels = load_data(args)
    print(f"fit on {train.shape[0]} x {train.shape[1]} features" + (f", {len(query)} queries" if query is not None else ""))
    print()
    print("| L | method | fit (s) | time / ITQ | BA iters | mAP@1000 | tie-aware |")
    print("|---:|:---|---:|---:|---:|---:|---:|")
    for n_bits in args.bits:
        times, rows = {}, []
        for name in args.methods:
            params = {"verbose": True} if (name == "ba" and args.verbose) else {}
            times[name] = np.inf
            for _ in range(max(args.repeat, 1)):
                model = make_hasher(name, n_bits, random_state=args.seed, **params)
                t0 = time.perf_counter()
                model.fit(train)
                times[name] = min(times[name], time.perf_counter() - t0)
            iters = f"{model.n_iter_}" + ("" if model.converged_ else " (max)") if name == "ba" else ""
            m_ap = "n/a | n/a"
            if query is not None:
                m_ap = " | ".join(f"{100 * v:.2f}" for v in map_at_k(model, db, db_labels, query, q_labels))
            rows.append((name, iters, m_ap))
        for name, iters, m_ap in rows:
            ratio = f"{times[name] / times['itq']:.1f}" if name == "ba" and "itq" in times else ""
            print(f"| {n_bits} | {name} | {times[name]:.2f} | {ratio} | {iters} | {m_ap} |", flush=True)


if __name__ == "__main__":
    main()
