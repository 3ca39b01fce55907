"""Exact search over float descriptors, Euclidean or cosine (faiss flat indexes), and the full
distance matrix for evaluation."""

from __future__ import annotations

import faiss
import numpy as np

from cbir.search.base import DEFAULT_CHUNK_SIZE, Index, check_floats

class EuclideanIndex(Index):
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
        return self._normalise(check_floats(values, self.dim, "database vectors"))

    def _prepare_queries(self, queries):
        return self._normalise(check_floats(queries, self.dim, "query vectors"))

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
