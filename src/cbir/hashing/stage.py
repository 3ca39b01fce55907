"""The ``train_hash`` stage: fit a hasher on a split's training features, encode every image."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from cbir.hashing import make_hasher
from cbir.hashing.base import BaseHasher
from cbir.hashing.persist import load_hash_model as _load, metadata_path, save_hasher
from cbir.codes import n_bytes, unpack_bits
from cbir.io import atomic_output, descriptor_chunks, multi_hot, read_descriptor_index, read_descriptor_rows, write_descriptors
from cbir.preprocess import apply_preprocessing, fit_preprocessing

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class HashModel:
    """A fitted hasher and the preprocessing (:mod:`cbir.preprocess` params) of its input."""

    hasher: BaseHasher
    preprocessing: dict


def load_hash_model(path) -> HashModel:
    """A model written by :func:`train_hash` (``model.npz`` and ``model.json``), without pickle."""
    hasher, preprocessing = _load(path)
    if preprocessing is None:
        raise ValueError(f"{metadata_path(path)} has no preprocessing: not written by the train_hash stage")
    return HashModel(hasher, preprocessing)


def encode(model: HashModel, features: np.ndarray) -> np.ndarray:
    """Packed codes of raw features with a model from :func:`load_hash_model`."""
    features = np.asarray(features, dtype=np.float32)
    return model.hasher.encode(apply_preprocessing(model.preprocessing, features))


def train_hash(
    features_path, method: str, n_bits: int, *, params: dict, seed: int, preprocess: str = "l2", train_sample: int | None = None,
    model_path, codes_path, trace_path,
) -> None:
    """Fit ``method`` with ``n_bits`` on the training rows (or a seeded sample of ``train_sample``
    of them) after preprocessing ``preprocess`` fitted on those rows; write the model
    (``model_path``, an ``.npz``, plus its ``.json`` sibling), the codes of every row and the
    per-iteration trace (TSV; only BA iterates, the other methods write the header ``iteration``).
    Supervised methods (CCA-ITQ) learn from the training rows' labels."""
    index = read_descriptor_index(features_path)
    if Path(features_path).is_file() and "feature" not in pq.read_schema(features_path).names:
        raise ValueError(f"{features_path} holds binary codes, not features")
    rows = np.flatnonzero(index["train"].to_numpy())
    if train_sample is not None:
        if isinstance(train_sample, bool) or not isinstance(train_sample, (int, np.integer)) or train_sample < 1:
            raise ValueError(f"train_sample must be a positive integer or None, got {train_sample!r}")
        if train_sample < len(rows):
            rows = np.sort(np.random.default_rng(seed).choice(rows, int(train_sample), replace=False))
        else:
            log.info("train_sample=%d >= the %d training rows: using them all", train_sample, len(rows))
    # Only the training rows are held in memory; every row is then encoded a chunk at a time.
    train = read_descriptor_rows(features_path, rows)
    preprocessing = fit_preprocessing(preprocess, train)
    train = apply_preprocessing(preprocessing, train)
    hasher = make_hasher(method, n_bits, random_state=seed, **params)
    log.info("fitting %s with %d bits on %d x %d training features (preprocessing %s)", method, n_bits, len(rows), train.shape[1], preprocess)
    started = time.perf_counter()
    # Supervised hashers (CCA-ITQ) learn from the labels: each image's label sets on multi-label data.
    labels = multi_hot(index["label"], index["labels"]) if "labels" in index else index["label"].to_numpy()
    hasher.fit(train, labels[rows])
    log.info("fitted in %.1f s", time.perf_counter() - started)
    del train
    save_hasher(hasher, model_path, preprocessing)
    codes = np.empty((len(index), n_bytes(n_bits)), np.uint8)
    for positions, values in descriptor_chunks(features_path):
        codes[positions] = hasher.encode(apply_preprocessing(preprocessing, values))
    write_descriptors(codes_path, index, codes, n_bits=n_bits)
    trace = getattr(hasher, "trace_", pd.DataFrame({"iteration": pd.Series(dtype="int64")}))
    with atomic_output(trace_path) as tmp:
        trace.to_csv(tmp, sep="\t", index=False)
    bits = unpack_bits(codes[index["database"].to_numpy()], n_bits)
    log.info("database bit balance: %s", np.round(bits.mean(0), 2).tolist())
