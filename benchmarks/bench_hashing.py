"""Fit time and retrieval quality of the hashing methods and of the binary autoencoder's options.

    uv run python benchmarks/bench_hashing.py                          # synthetic CNN-like features
    uv run python benchmarks/bench_hashing.py --features feats.parquet --bits 24 32 48 --seeds 0 1 2
    uv run python benchmarks/bench_hashing.py --methods ba itq --ba-variants ba ba-val200 ba-liblinear

Prints the machine (CPU model, usable cores) and a Markdown table: per code length L and method,
mean ± sd over the seeds (``--seeds``; the hasher's random_state, the data stay fixed) of

* fit (s), cpu (s): wall-clock fit time, sensitive to other load on the machine, and the CPU
  time of the process's threads during the fit (less so);
* BA iters: MAC iterations (BA only; "max" marks runs that did not reach Z = h(X));
* label mAP@1000: Hamming ranking of the database for each query, relevant = same label, AP@1000
  as the pipeline's evaluation computes it (ties by database index), then its tie-aware value;
* nbr P@K, nbr mAP: the unsupervised ground truth, relevant = the K (``--neighbours``, 50)
  Euclidean nearest database items of the query in the preprocessed feature space; tie-aware
  precision@K and tie-aware AP over the whole database ranking.

Methods are registry names (cca_itq is fitted with the training labels) or a deep hashing loss's
head-only training, ``<loss>_head`` (``dpsh_head``, ...: the hash layer trained on these features
with the labels, config/mnist.yaml's ``head_only`` recipe, one thread); BA option sets are
named ``--ba-variants`` (see BA_VARIANTS; ``ba`` = the defaults), and ``--ba-option
NAME='{"key": value}'`` adds one. Synthetic features: N train (= database) rows plus held-out
query rows of a seeded 10-class set with low-rank class structure, ReLU and L2 normalisation,
2,048-d. With --features, the cbir descriptor file's "train" rows fit the hashers (all of them,
or a seeded ``--train-sample``), and its "database"/"query" rows are evaluated; features are
preprocessed as the pipeline does (``--preprocess``, default l2, fitted on the training rows).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import time

import numpy as np

from cbir.methods import DEEP_HASHERS
from cbir.hashing import HASHERS, make_hasher
from cbir.hashing.validation import hamming_distances, tie_aware_precision_at_k
from cbir.metrics import evaluate_distances, neighbour_relevance
from cbir.preprocess import KINDS, apply_preprocessing, fit_preprocessing

LIBLINEAR = {"svm_tol": 1e-3, "svm_max_newton": None, "svm_max_cg": None}
#: option sets of the binary autoencoder, by name; "ba" is its defaults
BA_VARIANTS = {
    "ba": {},
    "ba-val200": {"n_validation": 200},
    "ba-liblinear": LIBLINEAR,
    "ba-always": {"reject_worse_svm": False},
    "ba-mu2": {"mu_factor": 2.0},
    "ba-mu1.25": {"mu_factor": 1.25},
    # the authors' procedure: their schedule (for [0, 1]-range features), validation, exact SVMs, no acceptance rule
    "ba-authors": {"mu_schedule": {"start": 2e-5, "factor": 2.0, "count": 20}, "n_validation": 200, "reject_worse_svm": False, **LIBLINEAR},
    # the defaults in torch on the GPU (give --warmup, so CUDA's start-up is not timed)
    "ba-cuda": {"device": "cuda"},
}


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


#: The deep hashing losses' head-only training: config/mnist.yaml's recipe (docs/hashing-notes.md; a test keeps them equal).
HEAD_RECIPE = {"epochs": 10, "batch_size": 128, "lr": 0.05, "momentum": 0.9, "weight_decay": 1e-4}


class DeepHead:
    """A deep hashing loss's head-only training as a fit/transform hasher, for this table: the
    workflow's ``<loss>_head`` (:func:`cbir.deephash.core.fit_heads`) on the features given."""

    def __init__(self, loss: str, n_bits: int, random_state: int = 0):
        self.loss, self.n_bits, self.random_state = loss, n_bits, random_state

    def fit(self, X, y):
        import torch

        from cbir.deephash import make_loss
        from cbir.deephash.core import fit_heads
        from cbir.io import multi_hot

        torch.set_num_threads(1)  # as the workflow's job
        targets = multi_hot(y)
        [(self.head_, _)] = fit_heads(X, targets, [make_loss(self.loss, self.n_bits, targets.shape[1], self.random_state)], HEAD_RECIPE, self.random_state)
        return self

    def transform(self, X):
        from cbir.deephash.core import head_outputs

        return (head_outputs(self.head_, X) > 0).astype(np.uint8)


def build(method: str, n_bits: int, seed: int, **params):
    """A hasher by registry name, or a deep loss's head-only training (``<loss>_head``)."""
    if method.endswith("_head"):
        return DeepHead(method.removesuffix("_head"), n_bits, seed)
    return make_hasher(method, n_bits, random_state=seed, **params)


def machine() -> str:
    """CPU model and the cores this process may use."""
    model = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as handle:
            model = next(line.split(":", 1)[1].strip() for line in handle if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{model}, {len(os.sched_getaffinity(0))} usable cores ({platform.system()} {platform.machine()})"


def load_data(args):
    """(train X, train labels, database X, database labels, query X, query labels), preprocessed."""
    if args.features is None:
        X, y = synthetic_cnn_features(args.n_train + args.n_query, args.dim, seed=args.data_seed)
        n = args.n_train
        train, train_y, query, query_y = X[:n], y[:n], X[n:], y[n:]
        db, db_y = train, train_y
    else:
        from cbir.io import read_descriptors

        desc = read_descriptors(args.features)
        train, train_y = desc.values[desc.train], desc.label[desc.train]
        db, query = desc.subset("database"), desc.subset("query")
        if not (len(db) and len(query)):
            raise SystemExit(f"{args.features} has no database/query rows to evaluate")
        db, db_y, query, query_y = db.values, db.label, query.values, query.label
    if args.train_sample is not None and args.train_sample < len(train):
        rows = np.sort(np.random.default_rng(args.data_seed).choice(len(train), args.train_sample, replace=False))
        train, train_y = train[rows], train_y[rows]
    params = fit_preprocessing(args.preprocess, train)
    return tuple(apply_preprocessing(params, a) if a.ndim == 2 else a for a in (train, train_y, db, db_y, query, query_y))


def scores(model, db, db_y, query, query_y, neighbours, n_neighbours) -> dict:
    distances = hamming_distances(model.transform(query), model.transform(db))
    labels = evaluate_distances(distances, query_labels=query_y, database_labels=db_y, k=1000)
    nbr_ap = evaluate_distances(distances, neighbours, k=None)["tie_aware_ap"]
    return {
        "label mAP@1000": 100 * labels["ap"].mean(),
        "label tie-aware": 100 * labels["tie_aware_ap"].mean(),
        f"nbr P@{n_neighbours}": 100 * tie_aware_precision_at_k(distances, neighbours, n_neighbours).mean(),
        "nbr mAP": 100 * nbr_ap.mean(),
    }


def mean_sd(values, digits: int = 2) -> str:
    values = np.asarray(values, dtype=np.float64)
    sd = values.std(ddof=1) if len(values) > 1 else 0.0
    return f"{values.mean():.{digits}f} ± {sd:.{digits}f}"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--features", help="cbir descriptor Parquet file (default: synthetic features)")
    parser.add_argument("--preprocess", choices=KINDS, default="l2", help="feature preprocessing (as hashing.preprocess)")
    parser.add_argument("--train-sample", type=int, help="fit on a seeded sample of this many training rows")
    parser.add_argument("--bits", type=int, nargs="+", default=[12, 24, 32, 48])
    parser.add_argument("--methods", nargs="+", default=["ba", "itq", "pcah", "lsh", "sh", "cca_itq"], choices=[*sorted(HASHERS), *(f"{m}_head" for m in DEEP_HASHERS)])
    parser.add_argument("--ba-variants", nargs="+", default=[v for v in BA_VARIANTS if v != "ba-cuda"], choices=sorted(BA_VARIANTS), help="BA option sets (with ba in --methods; ba-cuda needs a GPU)")
    parser.add_argument("--ba-option", action="append", default=[], metavar="NAME=JSON", help="an extra BA option set, e.g. x='{\"C\": 10}'")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="hasher random_state values (mean ± sd over them)")
    parser.add_argument("--neighbours", type=int, default=50, help="K of the neighbours ground truth")
    parser.add_argument("--n-train", type=int, default=10_000)
    parser.add_argument("--n-query", type=int, default=1_000)
    parser.add_argument("--dim", type=int, default=2048)
    parser.add_argument("--data-seed", type=int, default=0, help="seed of the synthetic data and of --train-sample")
    parser.add_argument("--log", action="store_true", help="log BA's per-iteration progress")
    parser.add_argument("--warmup", action="store_true", help="one untimed fit of each method on 1,000 rows first (a GPU's start-up, lazy imports)")
    args = parser.parse_args(argv)
    if args.log:
        logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    variants = {name: BA_VARIANTS[name] for name in args.ba_variants}
    for option in args.ba_option:
        name, _, value = option.partition("=")
        variants[name] = json.loads(value)

    train, train_y, db, db_y, query, query_y = load_data(args)
    neighbours = neighbour_relevance(query, db, args.neighbours)
    print(f"machine: {machine()}; wall-clock times, the machine may be shared")
    print(f"fit on {train.shape[0]} x {train.shape[1]} features ({args.preprocess}), {len(db)} database items, {len(query)} queries, "
          f"seeds {args.seeds}; neighbours ground truth: K = {args.neighbours} Euclidean")
    runs = [(name, "ba", params) for name, params in variants.items()] if "ba" in args.methods else []
    runs += [(m, m, {}) for m in args.methods if m != "ba"]
    if args.warmup:
        for name, method, params in runs:
            build(method, args.bits[0], 0, **params).fit(train[:1000], train_y[:1000])
    header = None
    for n_bits in args.bits:
        for name, method, params in runs:
            results, times, cpu, iters, capped = [], [], [], [], 0
            for seed in args.seeds:
                model = build(method, n_bits, seed, **params)
                t0, c0 = time.perf_counter(), time.process_time()
                model.fit(train, train_y)
                times.append(time.perf_counter() - t0)
                cpu.append(time.process_time() - c0)
                if method == "ba":
                    iters.append(model.n_iter_)
                    capped += not model.converged_
                results.append(scores(model, db, db_y, query, query_y, neighbours, args.neighbours))
            if header is None:
                header = list(results[0])
                print()
                print("| L | method | fit (s) | cpu (s) | BA iters | " + " | ".join(header) + " |")
                print("|---:|:---|---:|---:|---:|" + "---:|" * len(header))
            it = (mean_sd(iters, 1) + (f" ({capped} max)" if capped else "")) if iters else ""
            cells = " | ".join(mean_sd([r[k] for r in results]) for k in header)
            print(f"| {n_bits} | {name} | {mean_sd(times)} | {mean_sd(cpu)} | {it} | {cells} |", flush=True)


if __name__ == "__main__":
    main()
