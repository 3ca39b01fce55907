"""Exact Hamming search over packed binary codes (faiss ``IndexBinaryFlat``), and the full
Hamming distance matrix for evaluation."""

from __future__ import annotations

import faiss
import numpy as np

from cbir.codes import n_bytes
from cbir.search.base import DEFAULT_CHUNK_SIZE, Index, check_codes, check_n_bits

# IndexBinaryFlat's counting top-k ("mc") is faster than its heap for large k but allocates
# query_batch_size * (8 * code_size + 1) * k int64 per batch; use it while that stays below this.
_MC_MEMORY_LIMIT = 128 * 2**20


class HammingIndex(Index):
    """Exact Hamming-distance search over packed ``n_bits``-bit codes (faiss ``IndexBinaryFlat``).

    Codes are the uint8 arrays of :func:`cbir.codes.pack_bits` (``n_bytes(n_bits)`` bytes per
    code, MSB first, zero padded). faiss binary indexes need a dimension that is a multiple of 8,
    so the index dimension is ``8 * n_bytes(n_bits)``; the padding bits are zero in every code
    (checked by :meth:`add` and :meth:`search`), so distances are exact Hamming distances over
    the ``n_bits`` bits.

    **Ties**: results are ordered by (distance, database index), and when several items are tied
    at the k-th distance, the ones with the smallest database indices are returned. This is
    faiss's behaviour for both of its top-k algorithms (heap and counting), checked in
    ``tests/test_search.py`` against a stable sort. Rankings therefore depend on database order;
    the pipeline shuffles the database (seeded) so that this order is random, and
    :func:`cbir.metrics.tie_aware_average_precision_at_k` gives the order-free expectation.

    Distances are int32, indices int64.

    ``use_heap``: faiss's heap top-k (``True``) or its counting top-k (``False``, faster for large
    k, but it allocates ``32 * (8 * n_bytes + 1) * k`` int64 per internal batch). ``None`` (default)
    picks counting unless that buffer would exceed 128 MiB.
    """

    _raw_distance_dtype = np.int32

    def __init__(self, n_bits: int, chunk_size: int = DEFAULT_CHUNK_SIZE, use_heap: bool | None = None) -> None:
        self.n_bits = check_n_bits(n_bits)
        self.n_bytes = n_bytes(self.n_bits)
        self.use_heap = use_heap
        super().__init__(chunk_size)

    def __repr__(self) -> str:
        return f"HammingIndex(n_bits={self.n_bits}, ntotal={self.ntotal})"

    def _new_faiss_index(self):
        return faiss.IndexBinaryFlat(8 * self.n_bytes)

    def _prepare_database(self, values):
        return check_codes(values, self.n_bits, "database codes")

    def _prepare_queries(self, queries):
        return check_codes(queries, self.n_bits, "query codes")

    def _search_chunk(self, queries, k, distances, indices):
        use_heap = self.use_heap
        if use_heap is None:
            mc_bytes = self._faiss.query_batch_size * (8 * self.n_bytes + 1) * k * 8
            use_heap = mc_bytes > _MC_MEMORY_LIMIT
        self._faiss.use_heap = bool(use_heap)
        super()._search_chunk(queries, k, distances, indices)

    @property
    def codes(self) -> np.ndarray:
        """The database codes, (ntotal, n_bytes) uint8 (a copy)."""
        if self.ntotal == 0:
            return np.zeros((0, self.n_bytes), dtype=np.uint8)
        return self._faiss.reconstruct_n(0, self.ntotal)

    def pairwise(self, queries: np.ndarray) -> np.ndarray:
        """Full (Q, ntotal) int32 Hamming distance matrix of the queries to the database.

        For :func:`cbir.metrics.evaluate_distances` (tie-aware AP, PR curves by radius). It takes
        ``4 * Q * ntotal`` bytes: call it on chunks of queries for large databases.
        """
        queries = self._prepare_queries(queries)
        return pairwise_hamming(queries, self.codes, self.n_bits)


def pairwise_hamming(queries: np.ndarray, database: np.ndarray, n_bits: int) -> np.ndarray:
    """Full (Q, N) int32 Hamming distance matrix between packed codes (numpy popcount)."""
    n_bits = check_n_bits(n_bits)
    queries = check_codes(queries, n_bits, "query codes")
    database = check_codes(database, n_bits, "database codes")
    out = np.zeros((len(queries), len(database)), dtype=np.int32)
    for byte in range(queries.shape[1]):
        out += _popcount(queries[:, byte, None] ^ database[None, :, byte])
    return out


if hasattr(np, "bitwise_count"):  # numpy >= 2.0

    def _popcount(x: np.ndarray) -> np.ndarray:
        return np.bitwise_count(x)

else:  # pragma: no cover - numpy < 2
    _POPCOUNT_TABLE = np.unpackbits(np.arange(256, dtype=np.uint8)[:, None], axis=1).sum(1).astype(np.uint8)

    def _popcount(x: np.ndarray) -> np.ndarray:
        return _POPCOUNT_TABLE[x]
