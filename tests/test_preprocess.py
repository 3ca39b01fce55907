"""Tests of cbir.preprocess: the feature preprocessing shared by hashing and evaluation."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from cbir.preprocess import apply_preprocessing, fit_preprocessing


@pytest.fixture
def features():
    rng = np.random.default_rng(0)
    return (rng.standard_normal((50, 6)) * [1, 2, 3, 4, 5, 6] + 10).astype(np.float32)


def test_l2_rows_have_unit_length_and_zero_rows_stay_zero(features):
    X = features.copy()
    X[3] = 0
    out = apply_preprocessing(fit_preprocessing("l2", X), X)
    assert out.dtype == np.float32
    norms = np.linalg.norm(out, axis=1)
    np.testing.assert_allclose(np.delete(norms, 3), 1, rtol=1e-6)
    assert (out[3] == 0).all()
    np.testing.assert_allclose(out[5], X[5] / np.linalg.norm(X[5]), rtol=1e-6)


def test_range_puts_training_features_in_unit_box_and_keeps_neighbours(features):
    train, other = features[:40], features[40:]
    params = fit_preprocessing("range", train)
    out = apply_preprocessing(params, train)
    assert out.min() == pytest.approx(0, abs=1e-6) and out.max() == pytest.approx(1, abs=1e-6)
    assert (out.min(axis=0) == pytest.approx(0, abs=1e-6))  # every dimension starts at 0 ...
    assert out.max(axis=0).min() < 0.5  # ... and keeps its relative range (one global scale)
    # a translation and one scale: all squared distances shrink by the same factor
    d_raw = ((train[:, None] - train[None]) ** 2).sum(-1)
    d_out = ((out[:, None] - out[None]) ** 2).sum(-1)
    np.testing.assert_allclose(d_out * params["scale"] ** 2, d_raw, rtol=1e-4, atol=1e-3)
    # new rows use the training statistics, so they can leave [0, 1]
    np.testing.assert_allclose(apply_preprocessing(params, other), (other - params["offset"]) / params["scale"], rtol=1e-6)
    with pytest.raises(ValueError, match="fitted on 6 features"):
        apply_preprocessing(params, other[:, :3])


def test_range_of_constant_features_and_none(features):
    constant = np.ones((5, 3), dtype=np.float32)
    assert (apply_preprocessing(fit_preprocessing("range", constant), constant) == 0).all()
    assert apply_preprocessing(fit_preprocessing("none", features), features) is features


def test_unknown_kind_is_refused(features):
    with pytest.raises(ValueError, match="unknown preprocessing 'zscore'"):
        fit_preprocessing("zscore", features)
    with pytest.raises(ValueError, match="unknown preprocessing"):
        apply_preprocessing({"kind": "zscore"}, features)


def test_imports_neither_sklearn_nor_torch():
    code = "import sys, cbir.preprocess; print(sorted(m for m in ('sklearn', 'torch') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
