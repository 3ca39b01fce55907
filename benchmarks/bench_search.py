"""Search benchmark: cbir.search's faiss-backed indexes against plain numpy brute force.

    uv run python benchmarks/bench_search.py            # full run (1M codes; about a minute)
    uv run python benchmarks/bench_search.py --quick    # 100k codes instead of 1M

Prints a Markdown table. Cases (all with 1,000 queries and top k = 1,000, seeded random data):

* Hamming, 1,000,000 random 64-bit codes: HammingIndex vs numpy brute force (XOR + popcount,
  ``np.bitwise_count`` on uint64 words, then ``argpartition`` on ``distance * N + index`` so that
  ties are broken by index exactly like faiss), chunked over queries; both must return the same
  distances and indices;
* Hamming, 10,000 codes (the papers' database size), also with the byte-lookup-table popcount;
* Euclidean, 10,000 x 2,048 float32: EuclideanIndex vs numpy (BLAS distances + argpartition);
  distances must agree to float32 rounding;
* ApproximateHammingIndex (multi-index hashing) at a few settings, on uniformly random codes
  (worst case for hashing: the 1,000th neighbour is ~20 bits away) and on clustered codes (100
  centres, 5% of bits flipped: a stand-in for learned codes), with recall@1000 against exact search (by index, and
  tie-tolerant by distance) and build time;
* per-query latency of the exact indexes (queries one at a time, one faiss thread: a lone binary
  query is single-threaded anyway, and on a busy machine OpenMP barriers would otherwise add
  scheduler time slices): median and 95th percentile.

Times are wall-clock, best of ``--repeats`` runs for the fast cases, single runs for numpy on
the 1M case. On a shared machine they are noisy: compare rows of the same run. When other
processes keep the cores busy, OpenMP's default (spinning) barriers can make faiss several times
slower; ``OMP_WAIT_POLICY=PASSIVE uv run python benchmarks/bench_search.py`` (or ``--threads 1``)
avoids that. faiss-cpu wheels bundle their own OpenBLAS, which may not recognise a virtual
machine's CPU and fall back to slow generic kernels (EuclideanIndex then loses to numpy's BLAS);
``OPENBLAS_CORETYPE=SkylakeX`` (AVX-512) or ``Haswell`` (AVX2) fixes that. The header line records
these settings.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import faiss
import numpy as np

from cbir.search import (
    ApproximateHammingIndex,
    EuclideanIndex,
    HammingIndex,
    recall_at_k,
    summarize_query_times,
    time_queries,
)

LATENCY_NOTE = "median / p95 per query, 1 thread"
_POPCOUNT_TABLE = np.unpackbits(np.arange(256, dtype=np.uint8)[:, None], axis=1).sum(1).astype(np.uint8)


def numpy_hamming_topk(queries: np.ndarray, database: np.ndarray, k: int, chunk: int = 16, popcount: str = "bitwise_count"):
    """Brute-force Hamming top-k in numpy, ties broken by database index. Memory: chunk x N."""
    n = len(database)
    k = min(k, n)
    distances = np.empty((len(queries), k), dtype=np.int32)
    indices = np.empty((len(queries), k), dtype=np.int64)
    if popcount == "bitwise_count":
        if database.shape[1] % 8:
            raise ValueError("the uint64 popcount path needs codes of a multiple of 8 bytes")
        db_words = np.ascontiguousarray(database).view(np.uint64)
        q_words = np.ascontiguousarray(queries).view(np.uint64)
    arange = np.arange(n, dtype=np.int64)
    for s in range(0, len(queries), chunk):
        if popcount == "bitwise_count":
            q = q_words[s : s + chunk]
            d = np.zeros((len(q), n), dtype=np.int64)
            for w in range(q.shape[1]):
                d += np.bitwise_count(q[:, w, None] ^ db_words[None, :, w])
        else:  # byte lookup table
            q = queries[s : s + chunk]
            d = np.zeros((len(q), n), dtype=np.int64)
            for b in range(q.shape[1]):
                d += _POPCOUNT_TABLE[q[:, b, None] ^ database[None, :, b]]
        key = d * n + arange  # unique, ordered by (distance, index)
        top = np.argpartition(key, k - 1, axis=1)[:, :k] if k < n else np.broadcast_to(arange, key.shape)
        top = np.take_along_axis(top, np.argsort(np.take_along_axis(key, top, 1), axis=1), 1)
        indices[s : s + chunk] = top
        distances[s : s + chunk] = np.take_along_axis(d, top, 1)
    return distances, indices


def numpy_euclidean_topk(queries: np.ndarray, database: np.ndarray, k: int, chunk: int = 256):
    """Brute-force Euclidean top-k in numpy (float32 BLAS), distances as sqrt of squared."""
    k = min(k, len(database))
    db_sq = (database.astype(np.float32) ** 2).sum(1)
    distances = np.empty((len(queries), k), dtype=np.float32)
    indices = np.empty((len(queries), k), dtype=np.int64)
    for s in range(0, len(queries), chunk):
        q = queries[s : s + chunk]
        sq = (q**2).sum(1)[:, None] + db_sq[None] - 2 * (q @ database.T)
        top = np.argpartition(sq, k - 1, axis=1)[:, :k]
        top = np.take_along_axis(top, np.argsort(np.take_along_axis(sq, top, 1), axis=1, kind="stable"), 1)
        indices[s : s + chunk] = top
        distances[s : s + chunk] = np.sqrt(np.maximum(np.take_along_axis(sq, top, 1), 0))
    return distances, indices


def latency_text(times: np.ndarray, digits: int = 2) -> str:
    summary = summarize_query_times(times)
    return f"{summary['median_s'] * 1e3:.{digits}f} ms / {summary['p95_s'] * 1e3:.{digits}f} ms"


def timed(fn, repeats: int = 1):
    best, result = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def clustered_codes(rng, n_database: int, n_queries: int, n_bits: int, n_centres: int = 100, flip: float = 0.05):
    """Database and query codes drawn around the same random centres (each bit flipped with
    probability ``flip``): a stand-in for learned hash codes, whose neighbours are close."""
    centres = rng.integers(0, 2, (n_centres, n_bits), dtype=np.uint8)

    def draw(n):
        bits = centres[rng.integers(0, n_centres, n)] ^ (rng.random((n, n_bits)) < flip).astype(np.uint8)
        return np.packbits(bits, axis=1)

    return draw(n_database), draw(n_queries)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="100,000 instead of 1,000,000 database codes")
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--k", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3, help="repeats of the fast cases (best time kept)")
    parser.add_argument("--latency-sample", type=int, default=200, help="queries timed one at a time")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="faiss OpenMP threads (default: faiss's default)")
    args = parser.parse_args()
    if args.threads is not None:
        faiss.omp_set_num_threads(args.threads)

    load_before = " / ".join(f"{x:.1f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"
    rng = np.random.default_rng(args.seed)
    n_big = 100_000 if args.quick else 1_000_000
    n_bits, k, n_q = 64, args.k, args.queries
    rows: list[tuple[str, str, str, str, str]] = []  # case, method, seconds, check, notes

    def row(case, method, seconds, check="", notes=""):
        rows.append((case, method, f"{seconds:.3f}" if isinstance(seconds, float) else seconds, check, notes))
        print(f"  {case} | {method} | {rows[-1][2]} | {check} | {notes}", flush=True)

    print(f"# running ({n_q} queries, top {k}) ...", flush=True)

    # --- exact Hamming, big database -------------------------------------------------------
    db_big = rng.integers(0, 256, (n_big, 8), dtype=np.uint8)
    queries = rng.integers(0, 256, (n_q, 8), dtype=np.uint8)
    case = f"Hamming {n_big:,} x 64-bit"
    index = HammingIndex(n_bits)
    t_add, _ = timed(lambda: index.add(db_big))
    t_faiss, (fd, fi) = timed(lambda: index.search(queries, k), args.repeats)
    row(case, "HammingIndex (faiss IndexBinaryFlat)", t_faiss, "", f"add {t_add:.3f}s; k-th distance median {np.median(fd[:, -1]):.0f}")
    t_np, (nd, ni) = timed(lambda: numpy_hamming_topk(queries, db_big, k))
    same = np.array_equal(fd, nd) and np.array_equal(fi, ni)
    check = "same distances & indices" if same else "MISMATCH"
    row(case, "numpy bitwise_count + argpartition", t_np, check, f"{t_np / t_faiss:.1f}x HammingIndex time")
    latency = time_queries(index, queries, k, n_queries=args.latency_sample, seed=args.seed, n_threads=1)
    row(case, "HammingIndex, one query at a time", latency_text(latency), "", LATENCY_NOTE)

    # --- approximate Hamming -----------------------------------------------------------------
    db_clustered, q_clustered = clustered_codes(rng, n_big, n_q, n_bits)
    for data_name, db, qs in (("random", db_big, queries), ("clustered", db_clustered, q_clustered)):
        case = f"ANN {n_big:,} x 64-bit, {data_name} codes"
        if data_name == "random":
            exact_d, exact_i, t_exact = fd, fi, t_faiss
        else:
            exact = HammingIndex(n_bits)
            exact.add(db)
            t_exact, (exact_d, exact_i) = timed(lambda: exact.search(qs, k), args.repeats)
            row(case, "HammingIndex (exact reference)", t_exact, "", f"k-th distance median {np.median(exact_d[:, -1]):.0f}")
        for nhash, nflip in ((4, 1), (4, 2), (2, 1), (2, 2)):
            if data_name == "random" and nhash == 2:
                continue  # 32-bit substrings: almost every probed bucket is empty on random codes
            approx = ApproximateHammingIndex(n_bits, nhash=nhash, nflip=nflip)
            t_build, _ = timed(lambda: approx.add(db))
            t_search, (ad, ai) = timed(lambda: approx.search(qs, k))
            found = (ai >= 0).sum(1).mean()
            rec = recall_at_k(exact_i, ai)
            rec_tie = recall_at_k(exact_i, ai, exact_d, ad)
            row(
                case,
                f"multihash {nhash}x{64 // nhash} bits, nflip={nflip}",
                t_search,
                f"recall@{k} {rec:.3f} (tie-tolerant {rec_tie:.3f})",
                f"build {t_build:.2f}s; {t_search / t_exact:.2f}x exact time; mean found {found:.0f}; "
                f"exact within radius {approx.guaranteed_radius}",
            )
    db_big = db_clustered = None  # free the big arrays before the next case

    # --- exact Hamming, paper-sized database ---------------------------------------------------
    db_small = rng.integers(0, 256, (10_000, 8), dtype=np.uint8)
    case = "Hamming 10,000 x 64-bit"
    index = HammingIndex(n_bits)
    index.add(db_small)
    t_faiss, (fd, fi) = timed(lambda: index.search(queries, k), args.repeats)
    row(case, "HammingIndex (faiss IndexBinaryFlat)", t_faiss)
    for popcount in ("bitwise_count", "lookup table"):
        t_np, (nd, ni) = timed(lambda: numpy_hamming_topk(queries, db_small, k, chunk=128, popcount=popcount), args.repeats)
        same = np.array_equal(fd, nd) and np.array_equal(fi, ni)
        check = "same distances & indices" if same else "MISMATCH"
        row(case, f"numpy {popcount} + argpartition", t_np, check, f"{t_np / t_faiss:.1f}x HammingIndex time")
    latency = time_queries(index, queries, k, n_queries=args.latency_sample, seed=args.seed, n_threads=1)
    row(case, "HammingIndex, one query at a time", latency_text(latency, 3), "", LATENCY_NOTE)

    # --- Euclidean ---------------------------------------------------------------------------------
    dim = 2048
    x = rng.standard_normal((10_000, dim), dtype=np.float32)
    xq = rng.standard_normal((n_q, dim), dtype=np.float32)
    case = f"Euclidean 10,000 x {dim} float32"
    euclid = EuclideanIndex(dim, "l2")
    euclid.add(x)
    t_faiss, (ed, ei) = timed(lambda: euclid.search(xq, k), args.repeats)
    row(case, "EuclideanIndex l2 (faiss IndexFlatL2)", t_faiss)
    t_np, (nd, ni) = timed(lambda: numpy_euclidean_topk(xq, x, k), args.repeats)
    max_diff = float(np.abs(ed - nd).max())
    same_idx = float((ei == ni).mean())
    check = f"max abs. distance difference {max_diff:.1e}; {same_idx:.2%} same index"
    row(case, "numpy BLAS + argpartition", t_np, check, f"{t_np / t_faiss:.1f}x EuclideanIndex time")
    cosine = EuclideanIndex(dim, "cosine")
    cosine.add(x)
    t_cos, _ = timed(lambda: cosine.search(xq, k), args.repeats)
    row(case, "EuclideanIndex cosine (faiss IndexFlatIP)", t_cos)
    latency = time_queries(euclid, xq, k, n_queries=args.latency_sample, seed=args.seed, n_threads=1)
    row(case, "EuclideanIndex l2, one query at a time", latency_text(latency), "", LATENCY_NOTE)

    print()
    print(
        f"Search benchmark: {n_q:,} queries, top {k:,}; faiss {faiss.__version__} ({faiss.omp_get_max_threads()} threads), "
        f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}, "
        f"OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', 'unset')}, numpy {np.__version__}, "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, load average before run "
        f"{load_before}. Seconds, wall clock."
    )
    print()
    print("| case | method | time (s) | check | notes |")
    print("|---|---|---:|---|---|")
    for r in rows:
        print("| " + " | ".join(r) + " |")


if __name__ == "__main__":
    main()
