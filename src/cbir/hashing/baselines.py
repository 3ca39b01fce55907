"""Baseline hashers: LSH, PCA hashing, ITQ and spectral hashing."""

from __future__ import annotations

import numpy as np
from sklearn.decomposition import PCA
from sklearn.utils import check_random_state
from threadpoolctl import threadpool_limits

from cbir.hashing.base import BaseHasher, LinearHasher, seed_from


class LSH(LinearHasher):
    """Locality-sensitive hashing: signs of seeded Gaussian random projections of the centred data."""

    def __init__(self, n_bits: int = 32, *, random_state=None):
        self.n_bits = n_bits
        self.random_state = random_state

    def _fit(self, X):
        rng = check_random_state(self.random_state)
        self.mean_ = X.mean(axis=0)
        self.W_ = rng.standard_normal((X.shape[1], self.n_bits)).astype(X.dtype)
        self.b_ = -(self.mean_ @ self.W_)


class PCAH(LinearHasher):
    """PCA hashing: signs of the top ``n_bits`` principal components (sklearn PCA)."""

    _needs_n_bits_le_features = True

    def __init__(self, n_bits: int = 32, *, random_state=None):
        self.n_bits = n_bits
        self.random_state = random_state

    def _fit(self, X):
        rng = check_random_state(self.random_state)
        pca = PCA(n_components=self.n_bits, random_state=seed_from(rng)).fit(X)
        self.mean_, self.components_ = pca.mean_, pca.components_
        self.W_ = self.components_.T.copy()
        self.b_ = -(self.mean_ @ self.W_)


class ITQ(LinearHasher):
    """Iterative quantization (Gong & Lazebnik): PCA to ``n_bits`` dims, then the orthogonal
    rotation R minimising the quantisation loss ||B - V R||_F, by ``n_iter`` Procrustes updates
    from a random orthogonal R. Codes are sign(V R), V the centred PCA projection.
    """

    _needs_n_bits_le_features = True

    def __init__(self, n_bits: int = 32, *, n_iter: int = 50, random_state=None):
        self.n_bits = n_bits
        self.n_iter = n_iter
        self.random_state = random_state

    def _fit(self, X):
        rng = check_random_state(self.random_state)
        pca = PCA(n_components=self.n_bits, random_state=seed_from(rng)).fit(X)
        V = pca.transform(X).astype(np.float64)
        R, _ = np.linalg.qr(rng.standard_normal((self.n_bits, self.n_bits)))
        with threadpool_limits(1):  # small SVDs: BLAS threads only add overhead
            for _ in range(int(self.n_iter)):
                B = np.where(V @ R >= 0, 1.0, -1.0)
                U, _, Vt = np.linalg.svd(B.T @ V)  # B'V = U S Vt  ->  R = (U Vt)' maximises tr(B' V R)
                R = Vt.T @ U.T
        self.mean_, self.components_, self.rotation_ = pca.mean_, pca.components_, R
        self.W_ = (self.components_.T.astype(np.float64) @ R).astype(X.dtype)
        self.b_ = -(self.mean_.astype(np.float64) @ self.W_.astype(np.float64)).astype(X.dtype)


class SpectralHashing(BaseHasher):
    """Spectral hashing (Weiss, Torralba & Fergus 2008), as in the authors' trainSH/compressSH.

    PCA to min(n_bits, n_features) dims; a uniform distribution is fitted on the box spanned by
    the projected data; the ``n_bits`` eigenfunctions of smallest eigenvalue (lowest frequency,
    excluding the constant one) are chosen among the 1-D modes of every PCA direction; bit i is
    the sign of prod_j sin(pi/2 + modes_ij * pi / (mx_j - mn_j) * (x_j - mn_j)).
    """

    def __init__(self, n_bits: int = 32, *, random_state=None):
        self.n_bits = n_bits
        self.random_state = random_state

    def _fit(self, X):
        rng = check_random_state(self.random_state)
        n_bits = self.n_bits
        n_pca = min(n_bits, X.shape[1])
        pca = PCA(n_components=n_pca, random_state=seed_from(rng)).fit(X)
        self.pc_ = pca.components_.T.astype(np.float64)  # (D, n_pca)
        proj = (X @ self.pc_.astype(X.dtype)).astype(np.float64)  # not centred, as in trainSH
        eps = np.finfo(np.float64).eps
        self.mn_ = proj.min(axis=0) - eps
        self.mx_ = proj.max(axis=0) + eps
        extent = self.mx_ - self.mn_
        max_mode = np.ceil((n_bits + 1) * extent / extent.max()).astype(int)
        modes = np.ones((max_mode.sum() - n_pca + 1, n_pca))
        row = 0
        for i, k in enumerate(max_mode):
            modes[row + 1 : row + k, i] = np.arange(2, k + 1)
            row += k - 1
        modes -= 1
        eigval = -((modes * (np.pi / extent)) ** 2).sum(axis=1)
        order = np.argsort(-eigval, kind="stable")
        self.modes_ = modes[order[1 : n_bits + 1]]  # skip the constant eigenfunction

    def _project(self, X):
        proj = (X @ self.pc_.astype(X.dtype)).astype(np.float64) - self.mn_
        omegas = self.modes_ * (np.pi / (self.mx_ - self.mn_))
        out = np.empty((X.shape[0], self.n_bits))
        for i, omega in enumerate(omegas):
            out[:, i] = np.prod(np.sin(proj * omega + np.pi / 2), axis=1)
        return out
