"""Large collections with bounded memory: BA fitted on a sample, every item encoded in chunks.

    uv run python benchmarks/bench_scale.py                      # N = 100,000 (a few minutes on 2 cores)
    uv run python benchmarks/bench_scale.py --n 1000000          # needs ~4 GB of disk, not of memory

Synthetic CNN-like features (clustered, non-negative, 2,048-d) are written to disk as float16
(an N x d .npy file, in chunks, read back in chunks by plain file reads). Then, each step timed with the process's peak
resident memory after it:

1. BA (L bits) fitted on a seeded sample of ``--sample`` rows;
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


class RowFile:
    """An N x d float16 .npy file read and written in row chunks with plain file I/O.

    Not a memory map on purpose: the pages of a mapped file count towards the process's resident
    memory, so a memory map would hide what the steps themselves hold.
    """

    def __init__(self, path: Path, shape: tuple[int, int]):
        self.path, self.shape, self.dtype = path, shape, np.dtype(np.float16)
        self.row_bytes = shape[1] * self.dtype.itemsize

    def create(self) -> None:
        with open(self.path, "wb") as f:
            np.lib.format.write_array_header_1_0(f, {"descr": np.lib.format.dtype_to_descr(self.dtype), "fortran_order": False, "shape": self.shape})
            self.offset = f.tell()

    def append(self, block: np.ndarray) -> None:
        with open(self.path, "ab") as f:
            f.write(np.ascontiguousarray(block, dtype=self.dtype).tobytes())

    def rows(self, start: int, stop: int) -> np.ndarray:
        """Rows start..stop-1 as float32."""
        with open(self.path, "rb") as f:
            f.seek(self.offset + start * self.row_bytes)
            return np.fromfile(f, dtype=self.dtype, count=(stop - start) * self.shape[1]).reshape(-1, self.shape[1]).astype(np.float32)

    def take(self, rows: np.ndarray) -> np.ndarray:
        """Selected rows (sorted) as float32, read one at a time."""
        return np.stack([self.rows(r, r + 1)[0] for r in rows])


def write_features(file: RowFile, n_clusters: int, seed: int, chunk: int) -> None:
    """Clustered, non-negative features, written chunk by chunk."""
    rng = np.random.default_rng(seed)
    n, dim = file.shape
    centres = np.abs(rng.normal(0, 1, (n_clusters, dim))).astype(np.float32)
    file.create()
    for start in range(0, n, chunk):
        rows = rng.integers(0, n_clusters, min(chunk, n - start))
        file.append(centres[rows] + np.abs(rng.normal(0, 0.6, (len(rows), dim))).astype(np.float32))


def euclidean_top_k(file: RowFile, n: int, queries: np.ndarray, k: int, chunk: int) -> np.ndarray:
    """Exact top-k by Euclidean distance, merging per-chunk results: memory of one chunk."""
    best_d = np.full((len(queries), 0), np.inf, dtype=np.float32)
    best_i = np.zeros((len(queries), 0), dtype=np.int64)
    for start in range(0, n, chunk):
        block = file.rows(start, min(start + chunk, n))
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
        file = RowFile(Path(tmp) / "features.npy", (args.n + args.queries, args.dim))
        started = time.perf_counter()
        write_features(file, n_clusters=100, seed=args.seed, chunk=args.chunk)
        step(f"write {args.n + args.queries:,} float16 features", started)
        queries = file.rows(args.n, args.n + args.queries)

        started = time.perf_counter()
        sample_rows = np.sort(np.random.default_rng(args.seed).choice(args.n, size=min(args.sample, args.n), replace=False))
        sample = file.take(sample_rows)
        params = fit_preprocessing("l2", sample)
        ba = BinaryAutoencoder(args.bits, random_state=args.seed).fit(apply_preprocessing(params, sample))
        del sample
        step(f"BA fit on {len(sample_rows):,} rows", started)

        started = time.perf_counter()
        codes = np.empty((args.n, (args.bits + 7) // 8), dtype=np.uint8)
        for start in range(0, args.n, args.chunk):
            stop = min(start + args.chunk, args.n)
            codes[start:stop] = ba.encode(apply_preprocessing(params, file.rows(start, stop)))
        query_codes = ba.encode(apply_preprocessing(params, queries))
        step(f"encode {args.n:,} rows in chunks", started)

        started = time.perf_counter()
        index = HammingIndex(args.bits)
        index.add(codes)
        index.search(query_codes, args.k)
        step(f"Hamming search, {args.queries:,} queries", started)

        started = time.perf_counter()
        euclidean_top_k(file, args.n, queries, args.k, args.chunk)
        step(f"Euclidean search (float32, chunked), {args.queries:,} queries", started)

    print("\n| step | time (s) | peak RSS so far (GiB) |\n| --- | ---: | ---: |")
    for name, seconds, rss in rows:
        print(f"| {name} | {seconds:.1f} | {rss:.2f} |")
    print(f"| total | {sum(r[1] for r in rows):.1f} | |")
    print(f"(one run; the float features alone would take {args.n * args.dim * 4 / 2**30:.2f} GiB as float32)")


if __name__ == "__main__":
    main()
