"""Exact and approximate nearest-neighbour search over descriptors, with a faiss-style API.

Three index types share one interface (``add(values)``, ``search(queries, k) -> (distances,
indices)``, ``ntotal``, ``reset()``):

* :class:`HammingIndex` -- exact Hamming search over packed binary codes (:mod:`cbir.codes`),
  through faiss ``IndexBinaryFlat``;
* :class:`EuclideanIndex` -- exact search over float descriptors, Euclidean (``"l2"``) or cosine;
* :class:`ApproximateHammingIndex` -- hash-table (multi-index hashing) search over binary codes,
  through faiss ``IndexBinaryMultiHash`` / ``IndexBinaryHash``.

Conventions, common to all of them:

* results are sorted by increasing distance; row ``i`` answers query ``i``;
* ``k`` larger than the database is clamped to ``ntotal``: the result then has ``ntotal``
  columns (the whole database, ranked) instead of faiss's ``-1`` padding;
* queries are searched in chunks of ``chunk_size`` rows, so faiss's working memory stays bounded
  whatever the number of queries; results do not depend on the chunk size;
* database items are numbered ``0 .. ntotal - 1`` in the order they were added.

:func:`make_index` builds the right index for a descriptor array, :func:`time_queries` measures
per-query latency, :func:`recall_at_k` compares an approximate result with an exact one, and
:func:`pairwise_hamming` / :func:`pairwise_distances` give full distance matrices for evaluation
(:mod:`cbir.metrics`).
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import faiss
import numpy as np

from cbir.codes import MAX_BITS, n_bytes

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "MISSING_DISTANCE",
    "ApproximateHammingIndex",
    "EuclideanIndex",
    "HammingIndex",
    "make_index",
    "pairwise_distances",
    "pairwise_hamming",
    "recall_at_k",
    "summarize_query_times",
    "time_queries",
]

DEFAULT_CHUNK_SIZE = 1024
"""Queries per faiss call. Bounds faiss's own scratch memory; outputs are (Q, k) anyway."""

MISSING_DISTANCE = np.iinfo(np.int32).max
"""Distance faiss reports (with index -1) when an approximate search finds fewer than k items."""

# IndexBinaryFlat's counting top-k ("mc") is faster than its heap for large k but allocates
# query_batch_size * (8 * code_size + 1) * k int64 per batch; use it while that stays below this.
_MC_MEMORY_LIMIT = 128 * 2**20

# faiss's hash tables read a whole uint64 from the start of each hashed slice of a code; codes
# handed to them get this many spare zero bytes after the last row so the read stays in bounds.
_SLACK_BYTES = 8


# --------------------------------------------------------------------------------------------
# input validation


def _check_n_bits(n_bits: int) -> int:
    if isinstance(n_bits, bool) or not isinstance(n_bits, (int, np.integer)):
        raise ValueError(f"n_bits must be an integer, got {n_bits!r}")
    n_bits = int(n_bits)
    if not 1 <= n_bits <= MAX_BITS:
        raise ValueError(f"n_bits must be between 1 and {MAX_BITS}, got {n_bits}")
    return n_bits


def _check_codes(codes: np.ndarray, n_bits: int, what: str) -> np.ndarray:
    """Packed ``n_bits``-bit codes as a C-contiguous (N, n_bytes) uint8 array, or ValueError."""
    codes = np.asarray(codes)
    width = n_bytes(n_bits)
    if codes.dtype != np.uint8:
        raise ValueError(f"{what} must be packed uint8 codes (cbir.codes.pack_bits), got dtype {codes.dtype}")
    if codes.ndim != 2 or codes.shape[1] != width:
        raise ValueError(f"{what} must have shape (n, {width}) for {n_bits}-bit codes, got {codes.shape}")
    pad = 8 * width - n_bits
    if pad and len(codes) and (codes[:, -1] & np.uint8((1 << pad) - 1)).any():
        raise ValueError(
            f"{what} have non-zero padding bits: {n_bits}-bit codes must be packed MSB first with "
            "zero padding (cbir.codes.pack_bits)"
        )
    return np.ascontiguousarray(codes)


def _check_floats(values: np.ndarray, dim: int, what: str) -> np.ndarray:
    values = np.asarray(values)
    if values.dtype.kind not in "fiu":
        raise ValueError(f"{what} must be a numeric array, got dtype {values.dtype}")
    if values.ndim != 2 or values.shape[1] != dim:
        raise ValueError(f"{what} must have shape (n, {dim}), got {values.shape}")
    values = np.ascontiguousarray(values, dtype=np.float32)
    if not np.isfinite(values).all():
        raise ValueError(f"{what} contain NaN or infinite values")
    return values


def _check_k(k: int) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise ValueError(f"k must be a positive integer, got {k!r}")
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    return int(k)


def _check_chunk_size(chunk_size: int) -> int:
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, (int, np.integer)) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive integer, got {chunk_size!r}")
    return int(chunk_size)


def _with_slack(codes: np.ndarray) -> np.ndarray:
    """A C-contiguous copy of ``codes`` followed in memory by ``_SLACK_BYTES`` zero bytes."""
    n, width = codes.shape
    buffer = np.zeros(n * width + _SLACK_BYTES, dtype=np.uint8)
    out = buffer[: n * width].reshape(n, width)
    out[...] = codes
    return out


# --------------------------------------------------------------------------------------------
# indexes


class _Index:
    """Shared add/search/chunking logic; subclasses wrap one faiss index."""

    _raw_distance_dtype: type = np.float32  # dtype faiss writes distances in

    def __init__(self, chunk_size: int = DEFAULT_CHUNK_SIZE) -> None:
        self.chunk_size = _check_chunk_size(chunk_size)
        self._faiss = self._new_faiss_index()

    # subclass hooks
    def _new_faiss_index(self):  # pragma: no cover - abstract
        raise NotImplementedError

    def _prepare_database(self, values: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def _prepare_queries(self, queries: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def _search_chunk(self, queries: np.ndarray, k: int, distances: np.ndarray, indices: np.ndarray) -> None:
        """Search one chunk of prepared queries, writing into ``distances`` and ``indices``."""
        distances[...], indices[...] = self._faiss.search(queries, k)

    def _finish_distances(self, distances: np.ndarray) -> np.ndarray:
        return distances

    # public API
    @property
    def ntotal(self) -> int:
        """Number of database items added so far."""
        return int(self._faiss.ntotal)

    def __len__(self) -> int:
        return self.ntotal

    def add(self, values: np.ndarray) -> None:
        """Append database items; they get the next indices ``ntotal, ntotal + 1, ...``."""
        values = self._prepare_database(values)
        if len(values):
            self._faiss.add(values)

    def reset(self) -> None:
        """Remove all database items."""
        self._faiss.reset()

    def _begin_search(self, queries: np.ndarray, k: int, chunk_size: int | None) -> tuple[np.ndarray, int, int]:
        """Validated (prepared queries, k clamped to ntotal, chunk size)."""
        k = _check_k(k)
        chunk_size = self.chunk_size if chunk_size is None else _check_chunk_size(chunk_size)
        if self.ntotal == 0:
            raise ValueError("cannot search an empty index: add database items first")
        return self._prepare_queries(queries), min(k, self.ntotal), chunk_size

    def search(self, queries: np.ndarray, k: int, chunk_size: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` nearest database items of each query.

        Returns ``(distances, indices)``, both of shape ``(len(queries), min(k, ntotal))``, sorted
        by increasing distance. ``k`` larger than the database is clamped to ``ntotal`` (the whole
        database is returned, ranked). Queries are searched ``chunk_size`` rows at a time
        (default: the index's ``chunk_size``); the result does not depend on it.
        """
        queries, k, chunk_size = self._begin_search(queries, k, chunk_size)
        distances = np.empty((len(queries), k), dtype=self._raw_distance_dtype)
        indices = np.empty((len(queries), k), dtype=np.int64)
        for start in range(0, len(queries), chunk_size):
            stop = start + chunk_size
            self._search_chunk(queries[start:stop], k, distances[start:stop], indices[start:stop])
        return self._finish_distances(distances), indices

    def iter_search(self, queries: np.ndarray, k: int, chunk_size: int | None = None) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        """Search chunk by chunk: yields ``(start, distances, indices)`` for query rows ``start:``.

        Lets callers evaluate each chunk and drop it, so that memory stays bounded even when the
        full (Q, k) result would not fit. Inputs are validated at the call, results are computed
        as the iterator advances; ``k`` is clamped to ``ntotal`` as in :meth:`search`.
        """
        queries, k, chunk_size = self._begin_search(queries, k, chunk_size)
        return self._iter_chunks(queries, k, chunk_size)

    def _iter_chunks(self, queries: np.ndarray, k: int, chunk_size: int) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        for start in range(0, len(queries), chunk_size):
            chunk = queries[start : start + chunk_size]
            distances = np.empty((len(chunk), k), dtype=self._raw_distance_dtype)
            indices = np.empty((len(chunk), k), dtype=np.int64)
            self._search_chunk(chunk, k, distances, indices)
            yield start, self._finish_distances(distances), indices


class HammingIndex(_Index):
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
        self.n_bits = _check_n_bits(n_bits)
        self.n_bytes = n_bytes(self.n_bits)
        self.use_heap = use_heap
        super().__init__(chunk_size)

    def __repr__(self) -> str:
        return f"HammingIndex(n_bits={self.n_bits}, ntotal={self.ntotal})"

    def _new_faiss_index(self):
        return faiss.IndexBinaryFlat(8 * self.n_bytes)

    def _prepare_database(self, values):
        return _check_codes(values, self.n_bits, "database codes")

    def _prepare_queries(self, queries):
        return _check_codes(queries, self.n_bits, "query codes")

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


class EuclideanIndex(_Index):
    """Exact search over float descriptors of dimension ``dim`` (faiss flat indexes).

    ``metric="l2"``: faiss ``IndexFlatL2``; returned distances are true Euclidean distances
    (square roots of faiss's squared distances, negative rounding errors clipped to 0).

    ``metric="cosine"``: vectors are L2-normalised (a copy; all-zero vectors stay zero, so their
    cosine similarity to anything is 0) and searched with ``IndexFlatIP``; returned distances are
    cosine distances ``1 - cos`` in ``[0, 2]``.

    Values are converted to float32. For L2, faiss's BLAS search proposes ``REFINE_FACTOR * k``
    candidates that are re-ranked by exact distances (``IndexRefineFlat``; the vectors are stored
    twice). Ranking among exactly equal float distances is faiss's and is not guaranteed (such
    ties are rare with real-valued descriptors). Distances are float32, indices int64.
    """

    METRICS = ("l2", "cosine")

    def __init__(self, dim: int, metric: str = "l2", chunk_size: int = DEFAULT_CHUNK_SIZE) -> None:
        if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or dim < 1:
            raise ValueError(f"dim must be a positive integer, got {dim!r}")
        if metric not in self.METRICS:
            raise ValueError(f"unknown metric {metric!r}; expected one of {self.METRICS}")
        self.dim = int(dim)
        self.metric = metric
        super().__init__(chunk_size)

    def __repr__(self) -> str:
        return f"EuclideanIndex(dim={self.dim}, metric={self.metric!r}, ntotal={self.ntotal})"

    #: L2 candidates per result that faiss's BLAS stage passes to the exact re-ranking stage.
    #: BLAS rounding only moves items near the k-th distance, so a small margin suffices; each
    #: extra candidate costs a d-dimensional distance (benchmarks/bench_search.py shows the price).
    REFINE_FACTOR = 1.5

    def _new_faiss_index(self):
        if self.metric == "cosine":
            return faiss.IndexFlatIP(self.dim)
        # The flat index's BLAS form |q|^2 + |x|^2 - 2 q.x loses small distances in float32 and
        # depends on the batch size (one query or many), so near neighbours can swap between a
        # batch search and a single query. Re-ranking the candidates with the direct form
        # sum((q - x)^2) makes the result precise and independent of batching.
        index = faiss.IndexRefineFlat(faiss.IndexFlatL2(self.dim))
        index.k_factor = self.REFINE_FACTOR
        return index

    def _normalise(self, values: np.ndarray) -> np.ndarray:
        if self.metric == "cosine":
            norms = np.linalg.norm(values, axis=1, keepdims=True)
            values = values / np.where(norms > 0, norms, 1).astype(np.float32)
        return np.ascontiguousarray(values, dtype=np.float32)

    def _prepare_database(self, values):
        return self._normalise(_check_floats(values, self.dim, "database vectors"))

    def _prepare_queries(self, queries):
        return self._normalise(_check_floats(queries, self.dim, "query vectors"))

    def _finish_distances(self, distances):
        if self.metric == "l2":
            np.maximum(distances, 0, out=distances)
            return np.sqrt(distances, out=distances)
        return np.subtract(1, distances, out=distances)

    @property
    def vectors(self) -> np.ndarray:
        """The stored database vectors (normalised for cosine), (ntotal, dim) float32 (a copy)."""
        flat = self._faiss if self.metric == "cosine" else faiss.downcast_index(self._faiss.base_index)
        return flat.reconstruct_n(0, self.ntotal)

    def pairwise(self, queries: np.ndarray) -> np.ndarray:
        """Full (Q, ntotal) float32 distance matrix (same metric and units as :meth:`search`)."""
        queries = self._prepare_queries(queries)
        return pairwise_distances(queries, self.vectors, "l2" if self.metric == "l2" else "ip_normalised")


class ApproximateHammingIndex(_Index):
    """Approximate Hamming search with hash tables over substrings of the codes (faiss).

    ``method="multihash"`` (default): multi-index hashing (Norouzi, Punjani & Fleet, CVPR 2012)
    via faiss ``IndexBinaryMultiHash``: ``nhash`` tables, each keyed by a disjoint
    ``bits_per_hash``-bit substring of the code. A query probes, in every table, the buckets
    within ``nflip`` bit flips of its own substring; the union of those buckets is the candidate
    list, which is ranked by exact Hamming distance (the full codes are kept).

    ``method="hash"``: a single table on the first ``bits_per_hash`` bits (faiss
    ``IndexBinaryHash``), probing buckets within ``nflip`` flips: the classic "hash lookup"
    within a Hamming ball (``nhash`` is then 1).

    Defaults: ``nhash = ceil(n_bits / 16)`` tables of ``bits_per_hash = n_bits // nhash`` bits
    (for 64-bit codes, 4 tables of 16 bits), ``nflip = 1``; for ``method="hash"``,
    ``bits_per_hash = min(n_bits, 32)``. Bits not covered by any table still count in the
    distances used for ranking.

    Guarantee (pigeonhole): every database item within Hamming distance
    :attr:`guaranteed_radius` ``= nhash * (nflip + 1) - 1`` of a query is a candidate, so the top
    k is exact whenever the k-th nearest distance is at most that radius. Beyond it, results are
    approximate: the returned distances are exact, but better items may be missed.

    Missing results: when fewer than ``k`` candidates are found, the remaining columns hold index
    ``-1`` and distance :data:`MISSING_DISTANCE` (faiss's convention). Ties are ordered by index
    among the returned items, but which of several candidates tied at the k-th distance are kept
    is unspecified. Search cost grows like ``nhash * sum_{i<=nflip} C(bits_per_hash, i)`` probes
    plus the candidates; it beats :class:`HammingIndex` only when near neighbours are close
    (small k or well-clustered codes), not on uniformly random codes with a large k.

    Implementation notes: faiss's hash tables read substrings as little-endian machine words, so
    codes are re-packed internally with the least significant bit first (a fixed permutation of
    the bits of each byte, applied to database and queries alike: distances are unchanged) so
    that the tables cover the ``n_bits`` real bits and never the zero padding, and they are
    followed in memory by 8 spare bytes so faiss's word reads stay in bounds. Indices are
    ``0 .. ntotal - 1`` in insertion order, as for the exact indexes.
    """

    METHODS = ("multihash", "hash")
    _raw_distance_dtype = np.int32

    def __init__(
        self,
        n_bits: int,
        method: str = "multihash",
        nhash: int | None = None,
        bits_per_hash: int | None = None,
        nflip: int = 1,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
    ) -> None:
        self.n_bits = _check_n_bits(n_bits)
        self.n_bytes = n_bytes(self.n_bits)
        if method not in self.METHODS:
            raise ValueError(f"unknown method {method!r}; expected one of {self.METHODS}")
        if method == "hash":
            if nhash not in (None, 1):
                raise ValueError("method='hash' uses a single table: nhash must be 1 or None")
            nhash = 1
        elif nhash is None:
            nhash = -(-self.n_bits // 16)
        if isinstance(nhash, bool) or not isinstance(nhash, (int, np.integer)) or not 1 <= nhash <= self.n_bits:
            raise ValueError(f"nhash must be an integer between 1 and n_bits={self.n_bits}, got {nhash!r}")
        nhash = int(nhash)
        if bits_per_hash is None:
            bits_per_hash = min(self.n_bits // nhash, 32)
        if isinstance(bits_per_hash, bool) or not isinstance(bits_per_hash, (int, np.integer)):
            raise ValueError(f"bits_per_hash must be an integer, got {bits_per_hash!r}")
        bits_per_hash = int(bits_per_hash)
        if not 1 <= bits_per_hash <= 56 or nhash * bits_per_hash > self.n_bits:
            raise ValueError(
                f"need 1 <= bits_per_hash <= 56 and nhash * bits_per_hash <= n_bits={self.n_bits}, "
                f"got nhash={nhash}, bits_per_hash={bits_per_hash}"
            )
        if isinstance(nflip, bool) or not isinstance(nflip, (int, np.integer)) or not 0 <= nflip <= bits_per_hash:
            raise ValueError(f"nflip must be an integer between 0 and bits_per_hash={bits_per_hash}, got {nflip!r}")
        self.method = method
        self.nhash = nhash
        self.bits_per_hash = bits_per_hash
        self.nflip = int(nflip)
        super().__init__(chunk_size)

    def __repr__(self) -> str:
        return (
            f"ApproximateHammingIndex(n_bits={self.n_bits}, method={self.method!r}, nhash={self.nhash}, "
            f"bits_per_hash={self.bits_per_hash}, nflip={self.nflip}, ntotal={self.ntotal})"
        )

    @property
    def guaranteed_radius(self) -> int:
        """Items within this Hamming distance of a query are always found."""
        return self.nhash * (self.nflip + 1) - 1

    def _new_faiss_index(self):
        d = 8 * self.n_bytes
        if self.method == "hash":
            index = faiss.IndexBinaryHash(d, self.bits_per_hash)
        else:
            index = faiss.IndexBinaryMultiHash(d, self.nhash, self.bits_per_hash)
        index.nflip = self.nflip
        return index

    def _repack(self, codes: np.ndarray) -> np.ndarray:
        bits = np.unpackbits(codes, axis=1)  # MSB first: column j is code bit j
        return _with_slack(np.packbits(bits, axis=1, bitorder="little"))

    def _prepare_database(self, values):
        return self._repack(_check_codes(values, self.n_bits, "database codes"))

    def _prepare_queries(self, queries):
        return self._repack(_check_codes(queries, self.n_bits, "query codes"))


# --------------------------------------------------------------------------------------------
# helpers


def make_index(
    descriptors_values,
    n_bits: int | None = None,
    metric: str | None = None,
    *,
    approximate: bool = False,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    **kwargs,
):
    """Build and fill the index that suits a descriptor array.

    ``descriptors_values`` is a float (N, D) array, packed uint8 codes (with ``n_bits``), or a
    :class:`cbir.io.Descriptors` (its ``values`` and ``n_bits`` are used).

    * binary codes: ``metric`` must be ``None`` or ``"hamming"``; returns a filled
      :class:`HammingIndex`, or :class:`ApproximateHammingIndex` with ``approximate=True``
      (``kwargs`` go to its constructor: ``method``, ``nhash``, ``bits_per_hash``, ``nflip``);
    * float descriptors: ``metric`` is ``"l2"`` (default) or ``"cosine"``; returns a filled
      :class:`EuclideanIndex` (there is no approximate float index).
    """
    values = descriptors_values
    if hasattr(values, "values") and hasattr(values, "n_bits") and not isinstance(values, np.ndarray):
        if n_bits is not None and values.n_bits is not None and n_bits != values.n_bits:
            raise ValueError(f"n_bits={n_bits} contradicts the descriptors' n_bits={values.n_bits}")
        n_bits = values.n_bits if n_bits is None else n_bits
        values = values.values
    values = np.asarray(values)
    if values.ndim != 2:
        raise ValueError(f"descriptor values must be a 2-D array, got shape {values.shape}")
    if n_bits is not None:
        if metric not in (None, "hamming"):
            raise ValueError(f"binary codes are searched with the Hamming distance, not metric={metric!r}")
        if approximate:
            index = ApproximateHammingIndex(n_bits, chunk_size=chunk_size, **kwargs)
        else:
            index = HammingIndex(n_bits, chunk_size=chunk_size, **kwargs)
    else:
        if values.dtype == np.uint8:
            raise ValueError("uint8 values look like packed binary codes: pass n_bits")
        if approximate:
            raise ValueError("approximate search is only implemented for binary codes")
        metric = "l2" if metric is None else metric
        if metric == "hamming":
            raise ValueError("metric='hamming' needs binary codes and n_bits")
        index = EuclideanIndex(values.shape[1], metric=metric, chunk_size=chunk_size, **kwargs)
    index.add(values)
    return index


def pairwise_hamming(queries: np.ndarray, database: np.ndarray, n_bits: int) -> np.ndarray:
    """Full (Q, N) int32 Hamming distance matrix between packed codes (numpy popcount)."""
    n_bits = _check_n_bits(n_bits)
    queries = _check_codes(queries, n_bits, "query codes")
    database = _check_codes(database, n_bits, "database codes")
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


def pairwise_distances(queries: np.ndarray, database: np.ndarray, metric: str = "l2") -> np.ndarray:
    """Full (Q, N) float32 distance matrix between float vectors, as the indexes report them.

    ``metric``: ``"l2"`` (Euclidean distance), ``"cosine"`` (``1 - cos``; vectors are normalised
    here) or ``"ip_normalised"`` (``1 - <q, x>`` for already normalised vectors).
    """
    queries = np.asarray(queries, dtype=np.float64)
    database = np.asarray(database, dtype=np.float64)
    if queries.ndim != 2 or database.ndim != 2 or queries.shape[1] != database.shape[1]:
        raise ValueError(f"queries and database must be 2-D with the same width, got {queries.shape} and {database.shape}")
    # float64 arithmetic: the expanded form |q|^2 + |x|^2 - 2 q.x loses small distances in float32
    if metric == "l2":
        sq = (queries**2).sum(1)[:, None] + (database**2).sum(1)[None, :] - 2 * queries @ database.T
        return np.sqrt(np.maximum(sq, 0, out=sq)).astype(np.float32)
    if metric == "cosine":
        queries = queries / np.maximum(np.linalg.norm(queries, axis=1, keepdims=True), np.finfo(np.float64).tiny)
        database = database / np.maximum(np.linalg.norm(database, axis=1, keepdims=True), np.finfo(np.float64).tiny)
    elif metric != "ip_normalised":
        raise ValueError(f"unknown metric {metric!r}; expected 'l2', 'cosine' or 'ip_normalised'")
    return (1 - queries @ database.T).astype(np.float32)


def recall_at_k(
    exact_indices: np.ndarray,
    approx_indices: np.ndarray,
    exact_distances: np.ndarray | None = None,
    approx_distances: np.ndarray | None = None,
) -> float:
    """Mean recall of an approximate top-k against the exact top-k (search quality, not relevance).

    Without distances: the fraction of the exact result's items that the approximate result
    contains, ``|approx ∩ exact| / |exact|`` per query, averaged over queries (``-1`` entries are
    ignored). With many items tied at the k-th distance (common with Hamming distances) this
    under-rates an approximate search that returns *other* items at that same distance.

    With both distance arrays: tie-tolerant recall, where an approximate hit counts if it is at
    least as close as the exact k-th neighbour: per query ``(#approx with d < d_k +
    min(#approx with d == d_k, #exact with d == d_k)) / #exact``, ``d_k`` the exact k-th
    distance. It equals 1 exactly when the approximate result is an exact top-k up to the order
    of tied items.

    Not to be confused with :func:`cbir.metrics.recall_at_k` (relevant items retrieved).
    """
    exact_indices = np.asarray(exact_indices)
    approx_indices = np.asarray(approx_indices)
    if exact_indices.ndim != 2 or approx_indices.ndim != 2 or len(exact_indices) != len(approx_indices):
        raise ValueError(
            f"exact and approximate indices must be 2-D with the same number of queries, got "
            f"{exact_indices.shape} and {approx_indices.shape}"
        )
    if len(exact_indices) == 0:
        raise ValueError("no queries")
    exact_valid = exact_indices >= 0
    n_exact = exact_valid.sum(1)
    if (n_exact == 0).any():
        raise ValueError("every query needs at least one exact result")
    if (exact_distances is None) != (approx_distances is None):
        raise ValueError("give both exact_distances and approx_distances, or neither")
    if exact_distances is None:
        hits = np.array(
            [np.intersect1d(a[a >= 0], e[e >= 0], assume_unique=True).size for a, e in zip(approx_indices, exact_indices)]
        )
        return float(np.mean(hits / n_exact))
    exact_distances = np.asarray(exact_distances)
    approx_distances = np.asarray(approx_distances)
    if exact_distances.shape != exact_indices.shape or approx_distances.shape != approx_indices.shape:
        raise ValueError("distance arrays must have the shapes of their index arrays")
    kth = np.array([d[v][-1] for d, v in zip(exact_distances, exact_valid)])[:, None]
    approx_valid = approx_indices >= 0
    below = (approx_valid & (approx_distances < kth)).sum(1)
    at_approx = (approx_valid & (approx_distances == kth)).sum(1)
    at_exact = (exact_valid & (exact_distances == kth)).sum(1)
    return float(np.mean((below + np.minimum(at_approx, at_exact)) / n_exact))


def time_queries(
    index,
    queries: np.ndarray,
    k: int,
    n_queries: int | None = None,
    seed: int = 0,
    warmup: int = 1,
    n_threads: int | None = None,
) -> np.ndarray:
    """Per-query retrieval times in seconds: each query is searched alone (batch of one).

    ``n_queries`` samples that many queries without replacement (seeded) instead of timing all
    of them; ``warmup`` untimed searches run first. Returns a float64 array with one entry per
    timed query; summarise it with :func:`summarize_query_times` (median, 95th percentile).
    Timings are wall-clock (``time.perf_counter``) and include the Python/faiss call overhead,
    which is what a user of the index pays.

    ``n_threads`` sets faiss's OpenMP thread count for the measurement (restored afterwards);
    ``None`` keeps the current setting. A single binary query runs on one thread anyway, and on
    a machine whose cores are busy with other work, OpenMP's fork/join barriers can add whole
    scheduler time slices (milliseconds) per call, so ``n_threads=1`` (or the environment
    variable ``OMP_WAIT_POLICY=PASSIVE``) gives more meaningful latencies there.
    """
    k = _check_k(k)
    queries = np.asarray(queries)
    if queries.ndim != 2 or len(queries) == 0:
        raise ValueError(f"queries must be a non-empty 2-D array, got shape {queries.shape}")
    rows = np.arange(len(queries))
    if n_queries is not None:
        if n_queries < 1:
            raise ValueError(f"n_queries must be positive, got {n_queries}")
        rows = np.sort(np.random.default_rng(seed).choice(len(queries), size=min(n_queries, len(queries)), replace=False))
    if n_threads is not None and (isinstance(n_threads, bool) or not isinstance(n_threads, (int, np.integer)) or n_threads < 1):
        raise ValueError(f"n_threads must be a positive integer or None, got {n_threads!r}")
    previous_threads = faiss.omp_get_max_threads()
    if n_threads is not None:
        faiss.omp_set_num_threads(int(n_threads))
    try:
        for i in range(warmup):
            row = rows[i % len(rows)]
            index.search(queries[row : row + 1], k)
        times = np.empty(len(rows), dtype=np.float64)
        for j, row in enumerate(rows):
            query = queries[row : row + 1]
            start = time.perf_counter()
            index.search(query, k)
            times[j] = time.perf_counter() - start
    finally:
        faiss.omp_set_num_threads(previous_threads)
    return times


def summarize_query_times(times: np.ndarray) -> dict[str, float]:
    """``n``, ``median_s``, ``p95_s``, ``mean_s`` and ``max_s`` of per-query times."""
    times = np.asarray(times, dtype=np.float64)
    if times.ndim != 1 or len(times) == 0:
        raise ValueError("times must be a non-empty 1-D array")
    return {
        "n": int(len(times)),
        "median_s": float(np.median(times)),
        "p95_s": float(np.percentile(times, 95)),
        "mean_s": float(times.mean()),
        "max_s": float(times.max()),
    }
