"""Large collections with bounded memory: BA fitted on a sample, every item encoded in chunks.

    uv run python benchmarks/bench_scale.py                      # N = 100,000 (a few minutes on 2 cores)
    uv run python benchmarks/bench_scale.py --n 1000000          # needs ~4 GB of disk, not of memory

Synthetic CNN-like features (clustered, non-negative, 2,048-d) are written to disk as float16
(an N x d memory-mapped .npy file, in chunks). Then, each step timed with the process's peak
resident memory after it:

1. BA (L bits) fitted on a seeded sample of ``--sample`` rows, read from the memory map;
2. every row encoded chunk by chunk (the float features are never held whole in memory);
3. exact Hamming search of ``--queries`` held-out queries, top 1,000 (faiss, packed codes);
4. for comparison, exact Euclidean search of the same queries over the float features, chunk by
   chunk (a running top-k merge).

Peak RSS is the process's high-water mark (``ru_maxrss``): it only grows, so each row shows the
peak so far. The machine is printed with the table.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from cbir.hashing import BinaryAutoencoder  # noqa: E402
from cbir.preprocess import apply_preprocessing, fit_preprocessing  # noqa: E402
from cbir.provenance import cpu  # noqa: E402
from cbir.search import EuclideanIndex, HammingIndex  # noqa: E402


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def write_features(path: Path, n: int, dim: int, n_clusters: int, seed: int, chunk: int) -> np.ndarray:
    """Clustered features in a float16 memory map; returns each row's cluster."""
    rng = np.random.default_rng(seed)
    centres = np.abs(rng.normal(0, 1, (n_clusters, dim))).astype(np.float32)
    labels = rng.integers(0, n_clusters, n)
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float16, shape=(n, dim))
    for start in range(0, n, chunk):
        rows = labels[start : start + chunk]
        block = centres[rows] + np.abs(rng.normal(0, 0.6, (len(rows), dim))).astype(np.float32)
        out[start : start + len(rows)] = block
    out.flush()
    del out
    return labels


def euclidean_top_k(features: np.ndarray, queries: np.ndarray, k: int, chunk: int) -> np.ndarray:
    """Exact top-k by Euclidean distance, merging per-chunk results: memory of one chunk."""
    best_d = np.full((len(queries), 0), np.inf, dtype=np.float32)
    best_i = np.zeros((len(queries), 0), dtype=np.int64)
    for start in range(0, len(features), chunk):
        block = np.asarray(features[start : start + chunk], dtype=np.float32)
        index = EuclideanIndex(block.shape[1])
        index.add(block)
        d, i = index.search(queries, min(k, len(block)))
        d = np.concatenate([best_d, d.astype(np.float32)], axis=1)
        i = np.concatenate([best_i, i + start], axis=1)
        keep = np.argsort(d, axis=1, kind="stable")[:, :k]
        best_d, best_i = np.take_along_axis(d, keep, 1), np.take_along_axis(i, keep, 1)
    return best_i


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=100_000, help="database size")
    parser.add_argument("--dim", type=int, default=2048)
    parser.add_argument("--sample", type=int, default=10_000, help="BA training sample")
    parser.add_argument("--bits", type=int, default=48)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--k", type=int, default=1000)
    parser.add_argument("--chunk", type=int, default=20_000, help="rows per encoding / search chunk")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", type=Path, help="where the feature file goes (default: a temporary folder)")
    args = parser.parse_args()

    info = cpu()
    print(f"machine: {info['model']} ({os.cpu_count()} CPUs, {' '.join(info['isa'])}); N = {args.n:,} x {args.dim}, "
          f"BA {args.bits} bits on {args.sample:,} rows, {args.queries:,} queries, top {args.k:,}, chunks of {args.chunk:,}")
    rows = []

    def step(name, started):
        rows.append((name, time.perf_counter() - started, peak_rss_gib()))
        print(f"  {name}: {rows[-1][1]:.1f} s, peak RSS {rows[-1][2]:.2f} GiB", file=sys.stderr)

    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        path = Path(tmp) / "features.npy"
        started = time.perf_counter()
        write_features(path, args.n + args.queries, args.dim, n_clusters=100, seed=args.seed, chunk=args.chunk)
        step(f"write {args.n + args.queries:,} float16 features", started)
        features = np.load(path, mmap_mode="r")
        database, queries = features[: args.n], np.asarray(features[args.n :], dtype=np.float32)

        started = time.perf_counter()
        sample_rows = np.sort(np.random.default_rng(args.seed).choice(args.n, size=min(args.sample, args.n), replace=False))
        sample = np.asarray(database[sample_rows], dtype=np.float32)
        params = fit_preprocessing("l2", sample)
        ba = BinaryAutoencoder(args.bits, random_state=args.seed).fit(apply_preprocessing(params, sample))
        del sample
        step(f"BA fit on {len(sample_rows):,} rows", started)

        started = time.perf_counter()
        codes = np.empty((args.n, (args.bits + 7) // 8), dtype=np.uint8)
        for start in range(0, args.n, args.chunk):
            block = np.asarray(database[start : start + args.chunk], dtype=np.float32)
            codes[start : start + len(block)] = ba.encode(apply_preprocessing(params, block))
        query_codes = ba.encode(apply_preprocessing(params, queries))
        step(f"encode {args.n:,} rows in chunks", started)

        started = time.perf_counter()
        index = HammingIndex(args.bits)
        index.add(codes)
        index.search(query_codes, args.k)
        step(f"Hamming search, {args.queries:,} queries", started)

        started = time.perf_counter()
        euclidean_top_k(database, queries, args.k, args.chunk)
        step(f"Euclidean search (float32, chunked), {args.queries:,} queries", started)

    print("\n| step | time (s) | peak RSS so far (GiB) |\n| --- | ---: | ---: |")
    for name, seconds, rss in rows:
        print(f"| {name} | {seconds:.1f} | {rss:.2f} |")
    print(f"| total | {sum(r[1] for r in rows):.1f} | |")
    print(f"(one run; the float features alone would take {args.n * args.dim * 4 / 2**30:.2f} GiB as float32)")


if __name__ == "__main__":
    main()
