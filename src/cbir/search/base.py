"""What the indexes share: input checks and the add/search/chunking logic over one faiss index."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from cbir.codes import MAX_BITS, n_bytes

DEFAULT_CHUNK_SIZE = 1024
"""Queries per faiss call. Bounds faiss's own scratch memory; outputs are (Q, k) anyway."""

MISSING_DISTANCE = np.iinfo(np.int32).max
"""Distance faiss reports (with index -1) when an approximate search finds fewer than k items."""


def check_n_bits(n_bits: int) -> int:
    if isinstance(n_bits, bool) or not isinstance(n_bits, (int, np.integer)):
        raise ValueError(f"n_bits must be an integer, got {n_bits!r}")
    n_bits = int(n_bits)
    if not 1 <= n_bits <= MAX_BITS:
        raise ValueError(f"n_bits must be between 1 and {MAX_BITS}, got {n_bits}")
    return n_bits


def check_codes(codes: np.ndarray, n_bits: int, what: str) -> np.ndarray:
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


def check_floats(values: np.ndarray, dim: int, what: str) -> np.ndarray:
    values = np.asarray(values)
    if values.dtype.kind not in "fiu":
        raise ValueError(f"{what} must be a numeric array, got dtype {values.dtype}")
    if values.ndim != 2 or values.shape[1] != dim:
        raise ValueError(f"{what} must have shape (n, {dim}), got {values.shape}")
    values = np.ascontiguousarray(values, dtype=np.float32)
    if not np.isfinite(values).all():
        raise ValueError(f"{what} contain NaN or infinite values")
    return values


def check_k(k: int) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise ValueError(f"k must be a positive integer, got {k!r}")
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    return int(k)


def check_chunk_size(chunk_size: int) -> int:
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, (int, np.integer)) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive integer, got {chunk_size!r}")
    return int(chunk_size)


class Index:
    """Shared add/search/chunking logic; subclasses wrap one faiss index."""

    _raw_distance_dtype: type = np.float32  # dtype faiss writes distances in

    def __init__(self, chunk_size: int = DEFAULT_CHUNK_SIZE) -> None:
        self.chunk_size = check_chunk_size(chunk_size)
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
        k = check_k(k)
        chunk_size = self.chunk_size if chunk_size is None else check_chunk_size(chunk_size)
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
