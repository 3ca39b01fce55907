"""Feature preprocessing before hashing, fitted on the training features and applied to every row.

numpy only: evaluation jobs import it to build the neighbours ground truth in the same space the
hashers see, and they must not import scikit-learn or torch.

Kinds:

* ``l2`` -- each row scaled to unit Euclidean length (all-zero rows stay zero); stateless.
* ``range`` -- the binary autoencoder authors' normalisation (their ``ba.m``): subtract the
  per-dimension minimum of the training features and divide by the largest per-dimension range,
  so the training features lie in [0, 1]. A translation and one global scale: Euclidean
  neighbours are those of the raw features, and the data-independent constants of their code
  (the SVMs' C = 100, their mu schedules) refer to this scale.
* ``none`` -- the features as they are.

``fit_preprocessing`` returns a plain dict (``kind`` plus numpy arrays / floats) that
:func:`apply_preprocessing` uses and that model files store without pickle.
"""

from __future__ import annotations

import numpy as np

KINDS = ("l2", "range", "none")


def fit_preprocessing(kind: str, X_train) -> dict:
    """The parameters of preprocessing ``kind`` fitted on the rows of ``X_train``."""
    if kind not in KINDS:
        raise ValueError(f"unknown preprocessing {kind!r}; expected one of {KINDS}")
    if kind != "range":
        return {"kind": kind}
    X = np.asarray(X_train, dtype=np.float64)
    if X.ndim != 2 or len(X) == 0:
        raise ValueError(f"range preprocessing needs a non-empty 2-D training array, got shape {X.shape}")
    low = X.min(axis=0)
    extent = float((X.max(axis=0) - low).max())
    # constant features: nothing to rescale (their range is 0), keep them at 0
    return {"kind": "range", "offset": low.astype(np.float32), "scale": extent if extent > 0 else 1.0}


def apply_preprocessing(params: dict, X) -> np.ndarray:
    """Rows of X preprocessed with ``params`` from :func:`fit_preprocessing` (float32 in, float32 out)."""
    X = np.asarray(X)
    if X.dtype not in (np.float32, np.float64):
        X = X.astype(np.float32)
    kind = params.get("kind")
    if kind == "none":
        return X
    if kind == "l2":
        norms = np.linalg.norm(X, axis=1, keepdims=True)
        return X / np.where(norms > 0, norms, 1).astype(X.dtype)
    if kind == "range":
        offset = np.asarray(params["offset"], dtype=X.dtype)
        if X.ndim != 2 or X.shape[1] != len(offset):
            raise ValueError(f"range preprocessing was fitted on {len(offset)} features, got shape {X.shape}")
        return (X - offset) / X.dtype.type(params["scale"])
    raise ValueError(f"unknown preprocessing {kind!r}; expected one of {KINDS}")
