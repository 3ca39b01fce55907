"""The ``train_hash`` stage: fit a hasher on a split's training features, encode every image."""

from __future__ import annotations

import logging
import time

import joblib
import numpy as np
import pandas as pd

from cbir.hashing import make_hasher
from cbir.io import read_descriptors, write_descriptors, write_table

log = logging.getLogger(__name__)


def l2_normalize(X: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (all-zero rows stay zero)."""
    norms = np.linalg.norm(X, axis=1, keepdims=True)
    return X / np.where(norms > 0, norms, 1)


def load_hash_model(path) -> dict:
    """A model file written by :func:`train_hash`: the hasher and its preprocessing."""
    return joblib.load(path)


def encode(model: dict, features: np.ndarray) -> np.ndarray:
    """Packed codes of raw features with a model from :func:`load_hash_model`."""
    features = np.asarray(features, dtype=np.float32)
    return model["hasher"].encode(l2_normalize(features) if model["l2_normalize"] else features)


def train_hash(features_path, method: str, n_bits: int, params: dict, seed: int, normalize: bool, model_path, codes_path, trace_path) -> None:
    """Fit ``method`` with ``n_bits`` on the training rows; write the model, all codes and the trace."""
    features = read_descriptors(features_path)
    if features.is_binary:
        raise ValueError(f"{features_path} holds binary codes, not features")
    X = l2_normalize(features.values) if normalize else features.values
    train = X[features.train]
    hasher = make_hasher(method, n_bits, random_state=seed, **params)
    log.info("fitting %s with %d bits on %d x %d training features", method, n_bits, *train.shape)
    started = time.perf_counter()
    hasher.fit(train)
    log.info("fitted in %.1f s", time.perf_counter() - started)
    model = {"method": method, "n_bits": n_bits, "l2_normalize": normalize, "hasher": hasher}
    joblib.dump(model, model_path)
    codes = hasher.encode(X)
    write_descriptors(codes_path, features.index_frame(), codes, n_bits=n_bits)
    # Only BA iterates; the baselines' trace is empty so that every method has the same outputs.
    write_table(getattr(hasher, "trace_", pd.DataFrame({"iteration": pd.Series(dtype="int64")})), trace_path)
    bits = hasher.transform(X[features.database])
    log.info("database bit balance: %s", np.round(bits.mean(0), 2).tolist())
