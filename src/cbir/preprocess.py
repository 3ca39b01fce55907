"""Feature preprocessing before hashing, in one place (numpy only: evaluation jobs import it).

``l2``     rows scaled to unit length (all-zero rows stay zero)
``none``   the features as they are
"""

from __future__ import annotations

import numpy as np

KINDS = ("l2", "none")


def fit_preprocessing(kind: str, X_train: np.ndarray) -> dict:
    if kind not in KINDS:
        raise ValueError(f"unknown preprocessing {kind!r}; expected one of {KINDS}")
    return {"kind": kind}


def apply_preprocessing(params: dict, X: np.ndarray) -> np.ndarray:
    X = np.asarray(X)
    if params["kind"] == "l2":
        norms = np.linalg.norm(X, axis=1, keepdims=True)
        return X / np.where(norms > 0, norms, 1)
    return X
