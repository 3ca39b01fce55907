"""Approximate Hamming search with hash tables over substrings of the codes (faiss
``IndexBinaryMultiHash`` / ``IndexBinaryHash``)."""

from __future__ import annotations

import faiss
import numpy as np

from cbir.codes import n_bytes
from cbir.search.base import DEFAULT_CHUNK_SIZE, Index, check_codes, check_n_bits

# faiss's hash tables read a whole uint64 from the start of each hashed slice of a code; codes
# handed to them get this many spare zero bytes after the last row so the read stays in bounds.
_SLACK_BYTES = 8


def _with_slack(codes: np.ndarray) -> np.ndarray:
    """A C-contiguous copy of ``codes`` followed in memory by ``_SLACK_BYTES`` zero bytes."""
    n, width = codes.shape
    buffer = np.zeros(n * width + _SLACK_BYTES, dtype=np.uint8)
    out = buffer[: n * width].reshape(n, width)
    out[...] = codes
    return out


class ApproximateHammingIndex(Index):
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
        self.n_bits = check_n_bits(n_bits)
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
        return self._repack(check_codes(values, self.n_bits, "database codes"))

    def _prepare_queries(self, queries):
        return self._repack(check_codes(queries, self.n_bits, "query codes"))
