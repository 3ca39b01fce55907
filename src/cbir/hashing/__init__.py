"""Binary hashing of feature vectors: the binary autoencoder (BA) and baselines.

All hashers are scikit-learn style estimators with ``fit(X, y=None)`` (``y``, the labels, only
for supervised hashers: CCA-ITQ), ``transform(X)`` (an (N, n_bits) uint8 array of 0/1) and
``encode(X)`` (packed codes, see :mod:`cbir.codes`). Build one by name with :func:`make_hasher`
(a built-in one or a plug-in, see :mod:`cbir.plugins`); store and load fitted ones without pickle
with :func:`save_hasher` / :func:`load_hasher`.
"""

from __future__ import annotations

from cbir.hashing.ba import BinaryAutoencoder
from cbir.hashing.base import BaseHasher
from cbir.hashing.baselines import CCAITQ, ITQ, LSH, PCAH, SpectralHashing
from cbir.hashing.persist import load_hash_model, load_hasher, save_hasher

HASHERS = {"ba": BinaryAutoencoder, "itq": ITQ, "pcah": PCAH, "lsh": LSH, "sh": SpectralHashing, "cca_itq": CCAITQ}


def make_hasher(name: str, n_bits: int, random_state=None, **params) -> BaseHasher:
    """A hasher by registry name, e.g. ``make_hasher("ba", 32, random_state=0, max_iter=30)``, or
    by the name of a hasher plug-in (entry-point group ``cbir.hashers``)."""
    from cbir import plugins

    cls = plugins.method_class(plugins.HASHERS, name, HASHERS, "hashing method")
    return cls(n_bits=n_bits, random_state=random_state, **params)


__all__ = [
    "CCAITQ", "HASHERS", "BaseHasher", "BinaryAutoencoder", "ITQ", "LSH", "PCAH", "SpectralHashing",
    "load_hash_model", "load_hasher", "make_hasher", "save_hasher",
]
