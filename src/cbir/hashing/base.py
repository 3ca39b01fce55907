"""Shared estimator plumbing for the hashers: validation, ``transform`` and ``encode``.

Every hasher is a scikit-learn style estimator: ``__init__`` only stores parameters, ``fit(X)``
learns attributes ending in ``_`` and returns ``self``, ``transform(X)`` gives an (N, n_bits) uint8
array of 0/1 and ``encode(X)`` the same bits packed with :func:`cbir.codes.pack_bits`.
"""

from __future__ import annotations

import functools
import numbers
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.utils.validation import check_is_fitted
from threadpoolctl import ThreadpoolController

from cbir.codes import MAX_BITS, pack_bits


def check_n_bits(n_bits) -> int:
    """``n_bits`` as an int in 1..MAX_BITS, or a ValueError saying what is wrong."""
    if isinstance(n_bits, bool) or not isinstance(n_bits, numbers.Integral):
        raise ValueError(f"n_bits must be an integer, got {n_bits!r}")
    if not 1 <= n_bits <= MAX_BITS:
        raise ValueError(f"n_bits must be between 1 and {MAX_BITS}, got {n_bits}")
    return int(n_bits)


def check_features(X, n_features: int | None = None) -> np.ndarray:
    """X as a finite 2-D float32/float64 array (other dtypes become float64).

    With ``n_features``, also check the feature dimension the model was fitted on.
    """
    X = np.asarray(X)
    if X.ndim != 2:
        raise ValueError(f"X must be a 2-D (n_samples, n_features) array, got shape {X.shape}")
    if X.dtype not in (np.float32, np.float64):
        if not (np.issubdtype(X.dtype, np.number) or X.dtype == bool):
            raise ValueError(f"X must be numeric, got dtype {X.dtype}")
        X = X.astype(np.float64)
    if X.shape[0] == 0:
        raise ValueError("X has no samples")
    if n_features is not None and X.shape[1] != n_features:
        raise ValueError(f"expected {n_features} features, got {X.shape[1]}")
    if not np.isfinite(X).all():
        raise ValueError("X contains NaN or infinite values")
    return X


class BaseHasher(BaseEstimator):
    """Base class: subclasses implement ``_fit(X)`` (``_fit(X, y)`` if ``_supervised``) and
    ``_project(X)`` (bit l is 1 where > 0)."""

    #: hashers that need a PCA to n_bits dimensions cannot have more bits than features
    _needs_n_bits_le_features = False
    #: supervised hashers learn from labels: ``fit(X, y)`` requires y
    _supervised = False

    def fit(self, X, y=None):
        """Learn the hash function from the rows of X; ``y`` (labels, 1-D, or 2-D multi-hot) is
        required by supervised hashers and ignored by the others."""
        n_bits = check_n_bits(self.n_bits)
        X = check_features(X)
        n_samples, n_features = X.shape
        if n_samples < n_bits:
            raise ValueError(f"need at least n_bits={n_bits} samples to fit, got {n_samples}")
        if self._needs_n_bits_le_features and n_bits > n_features:
            raise ValueError(f"{type(self).__name__} needs n_bits <= n_features, got n_bits={n_bits} > {n_features} features")
        if self._supervised:
            if y is None:
                raise ValueError(f"{type(self).__name__} is supervised: fit(X, y) needs the labels y")
            y = np.asarray(y)
            if y.ndim not in (1, 2) or len(y) != n_samples:
                raise ValueError(f"y must be 1-D labels or 2-D multi-hot rows, one per sample ({n_samples}); got shape {y.shape}")
            self._fit(X, y)
        else:
            self._fit(X)
        self.n_features_in_ = n_features
        return self

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.required = self._supervised
        return tags

    def transform(self, X) -> np.ndarray:
        """The (N, n_bits) uint8 array of 0/1 bits of the rows of X."""
        check_is_fitted(self, "n_features_in_")
        X = check_features(X, self.n_features_in_)
        return (self._project(X) > 0).astype(np.uint8)

    def encode(self, X) -> np.ndarray:
        """Packed codes of the rows of X: (N, ceil(n_bits / 8)) uint8, MSB first (see cbir.codes)."""
        return pack_bits(self.transform(X))

    def fit_transform(self, X, y=None) -> np.ndarray:
        return self.fit(X, y).transform(X)

    def _fit(self, X: np.ndarray) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _project(self, X: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError


class LinearHasher(BaseHasher):
    """A hasher of the form bits = step(X @ W_ + b_), W_ of shape (n_features, n_bits)."""

    def _project(self, X: np.ndarray) -> np.ndarray:
        return X @ self.W_.astype(X.dtype, copy=False) + self.b_.astype(X.dtype, copy=False)


@functools.cache
def _blas_controller() -> ThreadpoolController:
    return ThreadpoolController()


def single_threaded_blas():
    """A context limiting BLAS/LAPACK to one thread, for small products and factorisations where
    threads only add overhead. ``threadpool_limits(1)`` would rescan the loaded libraries on
    every call (milliseconds each; BA enters this several times per iteration); the controller
    scans once, when numpy's BLAS is already loaded."""
    return _blas_controller().limit(limits=1)


def blas_threads() -> int:
    """The threads numpy's BLAS may use now (as limited by threadpoolctl, e.g. a job's
    ``threads``), at least 1."""
    info = [lib["num_threads"] for lib in _blas_controller().info() if lib.get("user_api") == "blas"]
    return max(1, min(info) if info else 1)


def threaded_map(function, items, workers: int) -> list:
    """``[function(item) for item in items]``, on up to ``workers`` threads (numpy releases the
    GIL in its array work); in order, and in this thread when one worker is all there is."""
    items = list(items)
    workers = min(workers, len(items))
    if workers <= 1:
        return [function(item) for item in items]
    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(function, items))


def seed_from(random_state) -> int:
    """An int seed drawn from a RandomState, for sub-estimators (e.g. sklearn's PCA)."""
    return int(random_state.randint(np.iinfo(np.int32).max))
