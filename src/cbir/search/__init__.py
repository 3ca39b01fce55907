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

import numpy as np

from cbir.search.approximate import ApproximateHammingIndex
from cbir.search.base import DEFAULT_CHUNK_SIZE, MISSING_DISTANCE
from cbir.search.euclidean import EuclideanIndex, pairwise_distances
from cbir.search.hamming import HammingIndex, pairwise_hamming
from cbir.search.timing import recall_at_k, summarize_query_times, time_queries

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
