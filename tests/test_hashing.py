"""Tests of cbir.hashing: the BA's Z, h and f steps and training options, the SVM solver, CCA-ITQ,
model files without pickle, the train_hash stage, and every hasher's API."""

from __future__ import annotations

import itertools
import json
import logging
import pickle

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.svm import LinearSVC

from cbir.codes import n_bytes, unpack_bits
from cbir.hashing import HASHERS, ITQ, LSH, PCAH, BinaryAutoencoder, load_hash_model, load_hasher, make_hasher, save_hasher
from cbir.hashing.ba import _least_squares_decoder, _MACState, _Validator
from cbir.hashing.svm import exact_line_search, fit_squared_hinge_svm, svm_objective
from cbir.hashing.validation import hamming_distances, tie_aware_precision_at_k
from cbir.hashing.zstep import box_qp, greedy_flips, zstep, zstep_authors, zstep_exact, zstep_objective, zstep_relaxed
from cbir.metrics import evaluate_distances

FAST = {"ba": {"max_iter": 5}}  # keep the BA fits in the API tests short


def hasher(name, n_bits, seed=0):
    return make_hasher(name, n_bits, random_state=seed, **FAST.get(name, {}))


def random_decoder_problem(rng, n, n_bits, dim=12):
    """Points, a decoder (A, c) and encoder codes H, plus the code-space quantities q, G, h_err."""
    X = rng.standard_normal((n, dim))
    A = rng.standard_normal((dim, n_bits))
    c = rng.standard_normal(dim) * 0.1
    H = rng.integers(0, 2, (n, n_bits)).astype(np.uint8)
    q, G = (X - c) @ A, A.T @ A
    h_err = ((X - c - H @ A.T) ** 2).sum(axis=1)
    return X, A, c, H, q, G, h_err


# ---------------------------------------------------------------------------------- Z step
@pytest.mark.parametrize("n_bits", [1, 3, 6, 10])
def test_exact_zstep_equals_brute_force(n_bits):
    rng = np.random.default_rng(n_bits)
    X, A, c, H, q, G, h_err = random_decoder_problem(rng, 40, n_bits)
    codes = np.array(list(itertools.product([0, 1], repeat=n_bits)), dtype=float)
    for mu in [0.0, 0.05 * h_err.mean() / n_bits, h_err.mean() / 3, 3 * h_err.mean()]:
        # brute force on the original objective ||x - c - A z||^2 + mu * Hamming(z, h)
        recon = ((X[:, None, :] - c - codes[None] @ A.T) ** 2).sum(axis=2)
        brute = recon + mu * (codes[None] != H[:, None]).sum(axis=2)
        for radius_bound in (h_err, None):
            Z = zstep_exact(q, G, H, mu, radius_bound)
            got = ((X - c - Z @ A.T) ** 2).sum(axis=1) + mu * (Z != H).sum(axis=1)
            np.testing.assert_allclose(got, brute.min(axis=1), rtol=1e-10, atol=1e-10)
            unique = np.sort(brute, axis=1)[:, 1] - brute.min(axis=1) > 1e-8
            np.testing.assert_array_equal(Z[unique], codes[brute.argmin(axis=1)][unique])


def test_exact_zstep_large_mu_keeps_h():
    rng = np.random.default_rng(1)
    _, _, _, H, q, G, h_err = random_decoder_problem(rng, 30, 5)
    np.testing.assert_array_equal(zstep_exact(q, G, H, 1.01 * h_err.max(), h_err), H)


def test_greedy_flips_never_worse_and_locally_optimal():
    rng = np.random.default_rng(2)
    _, _, _, H, q, G, h_err = random_decoder_problem(rng, 200, 24, dim=30)
    mu = h_err.mean() / 24
    Z0 = rng.integers(0, 2, H.shape).astype(np.uint8)
    Z = greedy_flips(Z0, q, G, H, mu)
    F = zstep_objective(Z, q, G, H, mu)
    assert (F <= zstep_objective(Z0, q, G, H, mu) + 1e-9).all()
    assert (F < zstep_objective(Z0, q, G, H, mu) - 1e-9).any()
    for bit in range(24):  # no single flip improves any point
        flipped = Z.copy()
        flipped[:, bit] ^= 1
        assert (zstep_objective(flipped, q, G, H, mu) >= F - 1e-9).all()


def test_relaxed_zstep_not_worse_than_rounding_h_or_previous():
    rng = np.random.default_rng(3)
    _, _, _, H, q, G, h_err = random_decoder_problem(rng, 300, 20, dim=30)
    Z_prev = rng.integers(0, 2, H.shape).astype(np.uint8)
    for mu in [0.0, h_err.mean() / 20, h_err.mean() / 4]:
        Z = zstep_relaxed(q, G, H, Z_prev, mu, h_err)
        F = zstep_objective(Z, q, G, H, mu)
        rounded = (box_qp(q, G, H, mu, Z_prev) > 0.5).astype(np.uint8)
        for other in (rounded, H, Z_prev):
            assert (F <= zstep_objective(other, q, G, H, mu) + 1e-9).all()
        assert F.sum() < zstep_objective(rounded, q, G, H, mu).sum()  # the flips do something


def test_relaxed_zstep_gives_the_same_codes_on_any_number_of_threads():
    rng = np.random.default_rng(6)
    _, _, _, H, q, G, h_err = random_decoder_problem(rng, 301, 20, dim=30)
    Z_prev = rng.integers(0, 2, H.shape).astype(np.uint8)
    mu = h_err.mean() / 20
    one = zstep_relaxed(q, G, H, Z_prev, mu, h_err, workers=1)
    for workers in (2, 3):
        np.testing.assert_array_equal(zstep_relaxed(q, G, H, Z_prev, mu, h_err, workers=workers), one)


def test_authors_zstep_ends_where_no_single_flip_helps_and_can_leave_h():
    rng = np.random.default_rng(7)
    n, n_bits, mu = 300, 24, 0.3
    A = rng.standard_normal((40, n_bits))
    G, q = A.T @ A, rng.standard_normal((n, n_bits)) * 3
    H = rng.integers(0, 2, (n, n_bits)).astype(np.uint8)
    Z, relaxed = zstep_authors(q, G, H, mu, H.astype(np.float64))
    assert Z.dtype == np.uint8 and relaxed.shape == (n, n_bits) and (relaxed >= 0).all() and (relaxed <= 1).all()
    base = zstep_objective(Z, q, G, H, mu)
    for bit in range(n_bits):
        flipped = Z.copy()
        flipped[:, bit] ^= 1
        assert (zstep_objective(flipped, q, G, H, mu) > base - 1e-9).all()  # a local optimum over single flips
    assert (Z != H).any()  # it moves away from h where that pays


def test_ba_authors_zstep_option_runs_on_numpy_only():
    X = _planted(42, n=200, dim=30, n_bits=20, noise=1.0)
    model = BinaryAutoencoder(20, zstep="authors", exact_max_bits=8, max_iter=6, random_state=0).fit(X)
    assert model.n_iter_ >= 1 and model.transform(X).shape == (200, 20)
    with pytest.raises(ValueError, match="zstep"):
        BinaryAutoencoder(20, zstep="mine").fit(X)


def test_box_qp_satisfies_kkt():
    rng = np.random.default_rng(4)
    _, _, _, H, q, G, _ = random_decoder_problem(rng, 50, 8)
    mu = 0.5
    Z = box_qp(q, G, H, mu, np.full(H.shape, 0.5), max_iter=5000, tol=1e-12)
    grad = 2 * (Z @ (G + mu * np.eye(8)) - (q + mu * H))
    scale = np.abs(grad).max()
    assert (Z >= 0).all() and (Z <= 1).all()
    interior = (Z > 1e-9) & (Z < 1 - 1e-9)
    assert np.abs(grad[interior]).max(initial=0) < 1e-6 * scale
    assert (grad[Z <= 1e-9] > -1e-6 * scale).all() and (grad[Z >= 1 - 1e-9] < 1e-6 * scale).all()


def test_zstep_exact_and_relaxed_agree_on_the_dispatch():
    rng = np.random.default_rng(5)
    _, _, _, H, q, G, h_err = random_decoder_problem(rng, 60, 6)
    mu = h_err.mean() / 6
    exact = zstep(q, G, H, H, mu, h_err, exact_max_bits=16)
    relaxed = zstep(q, G, H, H, mu, h_err, exact_max_bits=0)
    assert (zstep_objective(exact, q, G, H, mu) <= zstep_objective(relaxed, q, G, H, mu) + 1e-9).all()


# ---------------------------------------------------------------------------------- SVM
def _svm_problem(rng, n=250, d=12):
    X = rng.standard_normal((n, d)) + np.linspace(-1, 2, d)
    Y = np.sign(X @ rng.standard_normal((d, 3)) + rng.standard_normal((n, 3)) + 0.5)
    return X, Y


@pytest.mark.parametrize("C", [0.5, 20.0])
def test_svm_solver_matches_liblinear_objective(C):
    X, Y = _svm_problem(np.random.default_rng(int(C)))
    X_aug = np.hstack([X, np.ones((len(X), 1))])  # liblinear -B 1: a regularised bias feature
    V, _ = fit_squared_hinge_svm(X_aug, Y, C, tol=1e-10, max_newton=100, max_cg=200)
    ours = svm_objective(X_aug, Y, V, C)
    for k in range(Y.shape[1]):
        svc = LinearSVC(C=C, loss="squared_hinge", dual=True, fit_intercept=True, intercept_scaling=1, tol=1e-10, max_iter=200_000)
        svc.fit(X, Y[:, k])
        w = np.r_[svc.coef_.ravel(), svc.intercept_][:, None]
        theirs = svm_objective(X_aug, Y[:, [k]], w, C)[0]
        assert ours[k] == pytest.approx(theirs, rel=1e-7)


def test_svm_solver_rotation_invariant_and_warm_start():
    rng = np.random.default_rng(6)
    X, Y = _svm_problem(rng)
    X_aug = np.hstack([X, np.ones((len(X), 1))])
    Q, _ = np.linalg.qr(rng.standard_normal((X_aug.shape[1],) * 2))
    V, _ = fit_squared_hinge_svm(X_aug, Y, 10.0, tol=1e-10, max_newton=100, max_cg=200)
    V_rot, _ = fit_squared_hinge_svm(X_aug @ Q, Y, 10.0, tol=1e-10, max_newton=100, max_cg=200, precond_block=4)
    np.testing.assert_allclose(Q @ V_rot, V, rtol=1e-5, atol=1e-7)
    _, info = fit_squared_hinge_svm(X_aug, Y, 10.0, V0=V, tol=1e-6)
    assert info["n_newton"] == 0  # warm start at the optimum: nothing to do


def test_svm_without_budget_meets_liblinear_stopping_rule():
    # the authors' h step: LIBLINEAR -e 0.001 solves until ||grad f|| <= eps * min(#pos, #neg) / N * ||grad f(0)||
    X, Y = _svm_problem(np.random.default_rng(8), n=400, d=20)
    X_aug = np.hstack([X, np.ones((len(X), 1))])
    C, tol = 100.0, 1e-3

    def gradient(V):
        act = np.maximum(0.0, 1.0 - Y * (X_aug @ V))
        return V - 2 * C * X_aug.T @ (Y * act)

    n_pos = (Y > 0).sum(axis=0)
    bound = tol * np.minimum(n_pos, len(Y) - n_pos) / len(Y) * np.linalg.norm(gradient(np.zeros((X_aug.shape[1], 3))), axis=0)
    budget, _ = fit_squared_hinge_svm(X_aug, Y, C, tol=tol, max_newton=1, max_cg=2)
    assert (np.linalg.norm(gradient(budget), axis=0) > bound).any()  # one short step is not enough here
    V, _ = fit_squared_hinge_svm(X_aug, Y, C, tol=tol, max_newton=None, max_cg=None)
    assert (np.linalg.norm(gradient(V), axis=0) <= bound).all()


def test_exact_line_search_minimises_along_direction():
    rng = np.random.default_rng(7)
    X, Y = _svm_problem(rng)
    V, D = rng.standard_normal((X.shape[1], 3)) * 0.1, rng.standard_normal((X.shape[1], 3))
    t = exact_line_search(V, D, X @ V, X @ D, Y, 3.0)
    grid = np.linspace(0, 3 * t.max() + 1, 4001)
    values = np.array([svm_objective(X, Y, V + s * D, 3.0) for s in grid])
    best = svm_objective(X, Y, V + t * D, 3.0)
    assert (best <= values.min(axis=0) + 1e-9).all()


# ---------------------------------------------------------------------------------- BA
def _planted(seed, n=600, dim=40, n_bits=8, noise=0.3):
    rng = np.random.default_rng(seed)
    Z_true = rng.integers(0, 2, (n, n_bits))
    A = rng.standard_normal((dim, n_bits)) * rng.uniform(0.5, 2.0, n_bits)
    return (Z_true @ A.T + rng.standard_normal(dim) + noise * rng.standard_normal((n, dim))).astype(np.float32)


def _ls_recon_error(X, bits):
    A, c = _least_squares_decoder(X, bits)
    return float(((X - bits @ A.T - c) ** 2).sum())


@pytest.mark.parametrize("n_bits", [6, 20])
def test_e_q_non_increasing_at_fixed_mu(n_bits):
    X = _planted(10, n=300, dim=30, n_bits=n_bits, noise=0.5)
    itq = ITQ(n_bits, random_state=0).fit(X)
    state = _MACState(X, C=100.0)
    state.init_from_linear(itq.W_, itq.b_)
    mu = 0.1 * state.recon(state.Z).mean() / n_bits
    values = [state.e_q(mu)]
    for _ in range(4):
        state.z_step(mu, exact_max_bits=16)
        values.append(state.e_q(mu))
        state.h_step(tol=1e-3, max_newton=3, max_cg=10)
        values.append(state.e_q(mu))
        state.f_step()
        values.append(state.e_q(mu))
    values = np.array(values)
    assert (np.diff(values) <= 1e-9 * values[0]).all(), values
    assert values[-1] < values[0]


def test_h_step_keeps_old_svm_when_new_one_mismatches_more():
    # 1-D: z = 1 on [0, 0.95], 0 on [1.05, 2], plus 5 far outliers with z = 1 at x = 10. The
    # threshold x < 1 has 5 mismatches; the squared-hinge SVM is dragged by the outliers and has more.
    x = np.r_[np.linspace(0, 0.95, 100), np.linspace(1.05, 2, 100), np.full(5, 10.0)]
    X = x[:, None].astype(np.float32)
    z = np.r_[np.ones(100), np.zeros(100), np.ones(5)].astype(np.uint8)[:, None]
    state = _MACState(X, C=100.0)
    state.init_from_linear(np.array([[-1.0]]), np.array([1.0]))
    state.Z = z
    before = int((state.H != z).sum())
    assert before == 5
    V, _ = fit_squared_hinge_svm(state.X_rot, 2.0 * z - 1.0, 100.0, tol=1e-8, max_newton=50)
    assert int((((state.X_rot @ V) > 0) != z).sum()) > before  # the SVM alone would be worse
    trained, accepted, _ = state.h_step(tol=1e-8, max_newton=50, max_cg=50)
    assert (trained, accepted) == (1, 0) and int((state.H != z).sum()) == before
    # without the acceptance rule (the authors' h step) the worse SVM is taken
    state.Z_fit = None
    trained, accepted, _ = state.h_step(tol=1e-8, max_newton=50, max_cg=50, reject_worse=False)
    assert (trained, accepted) == (1, 1) and int((state.H != z).sum()) > before


TRACE_COLUMNS = ["iteration", "mu", "E_BA", "E_Q_start", "E_Q_hf", "E_Q_recon", "E_Q_penalty", "E_Q", "mismatches", "z_changed",
                 "svm_trained", "svm_accepted", "newton_steps", "cg_steps", "val_precision", "rolled_back", "seconds"]


def test_ba_trace_is_monotone_converges_and_is_logged(caplog):
    X = _planted(11, n=400, dim=30, n_bits=8)
    with caplog.at_level(logging.INFO, logger="cbir.hashing.ba"):
        model = BinaryAutoencoder(8, random_state=0).fit(X)
    tr = model.trace_
    assert list(tr.columns) == TRACE_COLUMNS
    assert len(tr) == model.n_iter_ and (np.diff(tr["mu"]) > 0).all()
    np.testing.assert_array_equal(tr["mu"], model.mu_schedule_[: model.n_iter_])
    assert (tr["E_Q_hf"] <= tr["E_Q_start"] * (1 + 1e-9)).all()
    assert (tr["E_Q"] <= tr["E_Q_hf"] * (1 + 1e-9)).all()
    np.testing.assert_allclose(tr["E_Q"], tr["E_Q_recon"] + tr["E_Q_penalty"])
    np.testing.assert_allclose(tr["E_Q_penalty"], tr["mu"] * tr["mismatches"])
    assert tr["val_precision"].isna().all() and not tr["rolled_back"].any()
    assert model.converged_ and tr["mismatches"].iloc[-1] == 0
    # at convergence Z = h(X): the encoder's codes decode with the recorded error
    bits = model.transform(X)
    recon = ((X - model.decode(bits)) ** 2).sum()
    assert recon <= tr["E_BA"].iloc[-1] * (1 + 1e-4) and tr["E_BA"].iloc[-1] == pytest.approx(tr["E_Q"].iloc[-1], rel=1e-6)
    iterations = [r.getMessage() for r in caplog.records if r.name == "cbir.hashing.ba" and r.getMessage().startswith("iter ")]
    assert len(iterations) == model.n_iter_ and f"mu {tr['mu'].iloc[-1]:.4g}" in iterations[-1]
    assert any("mu schedule" in r.getMessage() for r in caplog.records)


def test_ba_beats_itq_on_planted_binary_structure():
    # X = Z_true A^T + offset + noise. BA starts from the codes of ITQ(random_state=seed), so it is
    # compared with exactly its initialisation; ITQ can already be a fixed point of the alternation
    # (then BA keeps it), so require "never worse" everywhere and a clear gain on most seeds.
    ratios = []
    for seed in range(6):
        X = _planted(seed)
        ba = BinaryAutoencoder(8, random_state=seed).fit(X)
        itq = ITQ(8, random_state=seed).fit(X)
        ratios.append(_ls_recon_error(X, ba.transform(X)) / _ls_recon_error(X, itq.transform(X)))
    ratios = np.array(ratios)
    assert (ratios <= 1 + 1e-6).all(), ratios
    assert (ratios < 0.9).sum() >= 4, ratios


def test_ba_explicit_mu_schedules():
    X = _planted(12, n=200, dim=20, n_bits=4)
    model = BinaryAutoencoder(4, mu_schedule=[1e-3, 1e-3, 1e-2], random_state=0).fit(X)
    assert model.n_iter_ <= 3 and list(model.trace_["mu"]) == [1e-3, 1e-3, 1e-2][: model.n_iter_]
    model = BinaryAutoencoder(4, mu_schedule={"start": 2e-5, "factor": 2.0, "count": 20}, max_iter=5, random_state=0).fit(X)
    np.testing.assert_allclose(model.mu_schedule_, 2e-5 * 2.0 ** np.arange(20))
    assert model.n_iter_ <= 5
    for bad in ({"start": 1.0, "factor": 2.0}, [], [1.0, -1.0]):
        with pytest.raises(ValueError, match="mu_schedule"):
            BinaryAutoencoder(4, mu_schedule=bad).fit(X)


def _validated_fits():
    """BA fits with validation rollback on small noisy sets (K = 1 neighbour: rollbacks are common)."""
    fits = []
    for seed in range(3):
        X = _planted(30 + seed, n=300, dim=30, n_bits=20, noise=1.5)
        schedule = np.repeat(0.02 * 1.6 ** np.arange(10), 2)  # each mu twice: a rollback must skip the repeat
        fits.append((X, BinaryAutoencoder(20, mu_schedule=schedule, n_validation=60, random_state=seed).fit(X)))
    return fits


def test_ba_validation_rollback_keeps_the_best_validated_hash_function():
    fits = _validated_fits()
    assert any(model.trace_["rolled_back"].any() for _, model in fits)
    for X, model in fits:
        tr = model.trace_
        held_out = np.zeros(len(X), dtype=bool)
        held_out[model.validation_indices_] = True
        assert held_out.sum() == 60 and tr["val_precision"].notna().all()
        accepted = tr.loc[~tr["rolled_back"], "val_precision"].to_numpy()
        assert (np.diff(accepted) >= 0).all()  # an h step is kept only if it does not lower the precision
        last_accepted = -np.inf
        for i, row in tr.iterrows():
            if not row["rolled_back"]:
                last_accepted = row["val_precision"]
                continue
            assert row["val_precision"] < last_accepted or last_accepted == -np.inf  # (then below the ITQ start's)
            # the next distinct mu is taken (each is listed twice), or the schedule is exhausted and the fit ends
            assert (i == 0 or row["mu"] > tr["mu"].iloc[i - 1]) or (i == len(tr) - 1 and row["mu"] == model.mu_schedule_[-1])
        # the returned hash function is the last accepted one: recompute its validation precision
        validator = _Validator(X[~held_out], X[held_out])
        W_aug = np.vstack([model.W_, model.b_]).astype(np.float64)
        final = validator(model.transform(X[~held_out]), W_aug)
        expected = accepted[-1] if len(accepted) else None
        if expected is not None:
            assert final == pytest.approx(expected, abs=1e-12)


def test_ba_authors_validation_keeps_the_points_and_takes_the_first_step():
    X = _planted(40, n=300, dim=30, n_bits=20, noise=1.5)
    schedule = np.repeat(0.02 * 1.6 ** np.arange(10), 2)
    model = BinaryAutoencoder(20, mu_schedule=schedule, n_validation=60, validation_style="authors", random_state=0).fit(X)
    tr = model.trace_
    assert not tr["rolled_back"].iloc[0]  # accepted whatever it scores: the authors start from 0
    # the points stayed in the training set: the decoder is fitted on all 300 rows
    A, c = _least_squares_decoder(X.astype(np.float32), model.transform(X))
    assert np.allclose(model.A_, A) and np.allclose(model.c_, c)
    validator = _Validator(X, X[model.validation_indices_])
    assert validator.relevant[np.arange(60), model.validation_indices_].all()  # each point its own neighbour
    accepted = tr.loc[~tr["rolled_back"], "val_precision"].to_numpy()
    assert (np.diff(accepted) >= 0).all()
    held_out = BinaryAutoencoder(20, mu_schedule=schedule, n_validation=60, random_state=0).fit(X)
    assert not np.array_equal(held_out.A_, model.A_)  # the default leaves them out
    with pytest.raises(ValueError, match="validation_style"):
        BinaryAutoencoder(20, n_validation=60, validation_style="mine").fit(X)


@pytest.mark.parametrize("init, start", [("itq", ITQ), ("pca", PCAH), ("lsh", LSH)])
def test_ba_starts_from_the_codes_of_its_init(init, start):
    X = _planted(41, n=300, dim=30, n_bits=16, noise=1.0)
    model = BinaryAutoencoder(16, init=init, max_iter=1, random_state=3).fit(X)
    initial = start(16, random_state=3).fit(X).transform(X)
    # the first h step starts from the initial codes: its SVMs learn them, so most bits agree
    assert (model.transform(X) == initial).mean() > 0.9
    others = [other for other in (ITQ, PCAH, LSH) if other is not start]
    assert all((model.transform(X) == o(16, random_state=3).fit(X).transform(X)).mean() < 0.8 for o in others)
    with pytest.raises(ValueError, match="init"):
        BinaryAutoencoder(16, init="zeros").fit(X)


def test_tie_aware_precision_at_k():
    distances = np.array([[0, 1, 1, 1, 2, 2], [3, 2, 1, 0, 0, 5]])
    relevant = np.array([[1, 1, 0, 0, 1, 0], [0, 0, 0, 1, 0, 1]], dtype=bool)
    # row 0, k = 3: item 0 (relevant) plus 2 of the 3 items at distance 1, of which 1 is relevant
    # row 1, k = 3: the two items at distance 0 (one relevant) and the one at 1
    np.testing.assert_allclose(tie_aware_precision_at_k(distances, relevant, 3), [(1 + 2 / 3) / 3, 1 / 3])
    rng = np.random.default_rng(0)  # without ties it is the plain precision@k
    d = np.argsort(rng.random((5, 30)), axis=1)
    rel = rng.random((5, 30)) < 0.3
    top = np.argsort(d, axis=1)[:, :7]
    np.testing.assert_allclose(tie_aware_precision_at_k(d, rel, 7), np.take_along_axis(rel, top, 1).mean(1))
    a, b = rng.integers(0, 2, (4, 10)), rng.integers(0, 2, (6, 10))
    np.testing.assert_array_equal(hamming_distances(a, b), (a[:, None, :] != b[None]).sum(2))


# ---------------------------------------------------------------------------------- baselines
def test_itq_rotation_beats_random_rotations():
    X = _planted(20, n=500, dim=30, n_bits=6)
    itq = ITQ(6, random_state=0).fit(X)
    V = (X - itq.mean_) @ itq.components_.T

    def loss(R):
        VR = V @ R
        return ((np.where(VR >= 0, 1.0, -1.0) - VR) ** 2).sum()

    rng = np.random.default_rng(0)
    random_losses = [loss(np.linalg.qr(rng.standard_normal((6, 6)))[0]) for _ in range(20)]
    assert loss(itq.rotation_) < min(random_losses)
    # converged: R is the Procrustes solution for its own codes B, argmax_R tr(B^T V R)
    B = np.where(V @ itq.rotation_ >= 0, 1.0, -1.0)
    U, _, Vt = np.linalg.svd(B.T @ V)
    best = Vt.T @ U.T
    assert ((B - V @ itq.rotation_) ** 2).sum() <= ((B - V @ best) ** 2).sum() * (1 + 1e-6)
    np.testing.assert_array_equal(itq.transform(X), (V @ itq.rotation_ >= 0).astype(np.uint8))


def test_spectral_hashing_modes_on_a_line():
    # 1-D uniform data: the eigenfunctions are cos(k pi (x - min) / range), k = 1, 2, 3
    x = np.linspace(0, 1, 401)[:, None]
    bits = make_hasher("sh", 3).fit(x).transform(x)
    u = (x[:, 0] - x.min()) / np.ptp(x)
    for k in (1, 2, 3):
        expected = np.cos(k * np.pi * u) > 0
        agree = (bits[:, k - 1] == expected).mean()
        assert max(agree, 1 - agree) > 0.99  # up to the sign of the principal direction (k odd)


def _labelled(seed, n=600, n_classes=5, dim=40):
    """Classes separated along a few low-variance directions, hidden under high-variance nuisance."""
    rng = np.random.default_rng(seed)
    y = rng.integers(n_classes, size=n)
    means = rng.standard_normal((n_classes, 4)) * 1.5
    X = np.hstack([means[y] + 0.5 * rng.standard_normal((n, 4)), 4.0 * rng.standard_normal((n, dim - 4))])
    return (X @ np.linalg.qr(rng.standard_normal((dim, dim)))[0]).astype(np.float32), y


@pytest.mark.parametrize("n_bits", [4, 12])  # 12 > n_classes - 1: completed by residual principal directions
def test_cca_itq_beats_itq_on_labels(n_bits):
    X, y = _labelled(0)
    X, Xq, y, yq = X[:450], X[450:], y[:450], y[450:]

    def label_map(model):
        distances = hamming_distances(model.transform(Xq), model.transform(X))
        return evaluate_distances(distances, query_labels=yq, database_labels=y, k=None)["tie_aware_ap"].mean()

    cca = make_hasher("cca_itq", n_bits, random_state=0).fit(X, y)
    itq = make_hasher("itq", n_bits, random_state=0).fit(X)
    assert label_map(cca) > label_map(itq) + 0.15
    r = cca.correlations_
    assert len(r) == min(n_bits, 4) and (np.diff(r) <= 1e-12).all() and (r > 0).all() and (r <= 1 + 1e-9).all()
    with pytest.raises(ValueError, match="supervised"):
        make_hasher("cca_itq", n_bits).fit(X)
    with pytest.raises(ValueError, match="one per sample"):
        make_hasher("cca_itq", n_bits).fit(X, y[:-1])


# ---------------------------------------------------------------------------------- API
@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    return rng.standard_normal((400, 80)).astype(np.float32)


@pytest.fixture(scope="module")
def labels():
    return np.random.default_rng(1).integers(0, 5, 400)


@pytest.mark.parametrize("name", sorted(HASHERS))
def test_deterministic_and_saved_without_pickle(name, data, labels, tmp_path):
    codes = hasher(name, 12).fit(data, labels).encode(data)
    model = hasher(name, 12).fit(data, labels)
    np.testing.assert_array_equal(model.encode(data), codes)
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(model)).encode(data), codes)
    assert clone(model).get_params() == model.get_params()
    preprocessing = {"kind": "range", "offset": np.arange(80, dtype=np.float32), "scale": 3.5}
    save_hasher(model, tmp_path / "model.npz", preprocessing)
    meta = json.loads((tmp_path / "model.json").read_text())
    assert meta["method"] == name and meta["params"] == json.loads(json.dumps(model.get_params()))
    loaded, prep = load_hash_model(tmp_path / "model.npz")
    assert type(loaded) is type(model) and loaded.get_params() == json.loads(json.dumps(model.get_params()))
    np.testing.assert_array_equal(loaded.encode(data), codes)
    assert prep["kind"] == "range" and prep["scale"] == 3.5 and np.array_equal(prep["offset"], preprocessing["offset"])
    # a pickle placed as the model file is refused, naming the file, and never unpickled
    (tmp_path / "model.npz").write_bytes(pickle.dumps(model))
    with pytest.raises(ValueError, match=r"model\.npz is not a plain-array hash model"):
        load_hasher(tmp_path / "model.npz")


def test_model_files_refuse_object_arrays_and_need_their_metadata(data, tmp_path):
    model = hasher("itq", 8).fit(data)
    save_hasher(model, tmp_path / "model.npz")
    assert load_hash_model(tmp_path / "model.npz")[1] is None
    np.savez(tmp_path / "model.npz", **{"hasher.W_": np.array([object()], dtype=object)})
    with pytest.raises(ValueError, match="refusing to load"):
        load_hasher(tmp_path / "model.npz")
    (tmp_path / "model.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"model\.json"):
        load_hasher(tmp_path / "model.npz")
    with pytest.raises(ValueError, match=r"\.npz"):
        save_hasher(model, tmp_path / "model.joblib")


@pytest.mark.parametrize("name", ["lsh", "itq", "ba"])
def test_seed_matters(name, data):
    assert not np.array_equal(hasher(name, 12, seed=0).fit(data).encode(data), hasher(name, 12, seed=1).fit(data).encode(data))


@pytest.mark.parametrize("name", sorted(HASHERS))
@pytest.mark.parametrize("n_bits", [1, 7, 8, 9, 33, 64])
def test_packed_width_and_bits_not_constant(name, n_bits, data, labels):
    model = hasher(name, n_bits).fit(data, labels)
    bits = model.transform(data)
    codes = model.encode(data)
    assert bits.shape == (len(data), n_bits) and bits.dtype == np.uint8
    assert codes.shape == (len(data), n_bytes(n_bits)) and codes.dtype == np.uint8
    np.testing.assert_array_equal(unpack_bits(codes, n_bits), bits)
    frac = bits.mean(axis=0)
    assert ((frac > 0) & (frac < 1)).all(), frac


@pytest.mark.parametrize("name", sorted(HASHERS))
def test_bad_input_errors(name, data, labels):
    with pytest.raises(NotFittedError):
        hasher(name, 8).transform(data)
    bad = data.copy()
    bad[3, 5] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        hasher(name, 8).fit(bad, labels)
    bad[3, 5] = np.inf
    with pytest.raises(ValueError, match="infinite"):
        hasher(name, 8).fit(bad, labels)
    with pytest.raises(ValueError, match="2-D"):
        hasher(name, 8).fit(data[0], labels)
    for n_bits in (0, 65):
        with pytest.raises(ValueError, match="n_bits must be between 1 and 64"):
            hasher(name, n_bits).fit(data, labels)
    with pytest.raises(ValueError, match="at least n_bits=16 samples"):
        hasher(name, 16).fit(data[:10], labels[:10])
    model = hasher(name, 8).fit(data, labels)
    with pytest.raises(ValueError, match="expected 80 features, got 40"):
        model.transform(data[:, :40])
    with pytest.raises(ValueError, match="expected 80 features, got 40"):
        model.encode(data[:, :40])
    with pytest.raises(ValueError, match="NaN"):
        model.encode(bad)


def test_make_hasher_registry():
    assert isinstance(make_hasher("ba", 12, random_state=3, max_iter=5), BinaryAutoencoder)
    assert make_hasher("itq", 12, n_iter=3).get_params()["n_iter"] == 3
    with pytest.raises(ValueError, match="unknown hashing method"):
        make_hasher("nope", 8)
    with pytest.raises(ValueError, match="n_bits <= n_features"):
        make_hasher("pcah", 16).fit(np.random.default_rng(0).standard_normal((50, 8)))


# ---------------------------------------------------------------------------------- stage
def test_train_hash_stage_on_a_sample_writes_model_codes_and_trace(tmp_path):
    from cbir.hashing.stage import encode, train_hash
    from cbir.hashing.stage import load_hash_model as load_stage_model
    from cbir.io import read_descriptors, write_descriptors

    X, y = _labelled(1, n=300)
    index = pd.DataFrame({"image_id": [f"i{k}" for k in range(300)], "label": y, "train": np.arange(300) < 200,
                          "database": np.arange(300) < 200, "query": np.arange(300) >= 200})
    write_descriptors(tmp_path / "features.parquet", index, X + 5.0)
    out = tmp_path / "ba"
    train_hash(tmp_path / "features.parquet", "ba", 8, params={"max_iter": 10, "n_validation": 20}, seed=3, preprocess="range",
               train_sample=120, model_path=out / "model.npz", codes_path=out / "descriptors.parquet", trace_path=out / "trace.tsv")
    model = load_stage_model(out / "model.npz")
    codes = read_descriptors(out / "descriptors.parquet")
    assert codes.n_bits == 8 and len(codes) == 300
    np.testing.assert_array_equal(encode(model, X + 5.0), codes.values)  # every row, with the stored preprocessing
    assert model.preprocessing["kind"] == "range"
    train_rows = (X + 5.0)[:200]
    # fitted on a 120-row sample: its range is inside that of all 200 training rows
    assert (model.preprocessing["offset"] >= train_rows.min(0) - 1e-6).all()
    assert len(model.hasher.validation_indices_) == 20
    trace = pd.read_csv(out / "trace.tsv", sep="\t")
    assert list(trace.columns) == TRACE_COLUMNS and len(trace) == model.hasher.n_iter_
    train_hash(tmp_path / "features.parquet", "cca_itq", 8, params={}, seed=3, model_path=out / "cca.npz",
               codes_path=out / "cca.parquet", trace_path=out / "cca.tsv")
    assert list(pd.read_csv(out / "cca.tsv", sep="\t").columns) == ["iteration"]
    with pytest.raises(ValueError, match="train_sample"):
        train_hash(tmp_path / "features.parquet", "itq", 8, params={}, seed=3, train_sample=0, model_path=out / "x.npz",
                   codes_path=out / "x.parquet", trace_path=out / "x.tsv")



# ---------------------------------------------------------------------------------- torch
@pytest.mark.parametrize("n_bits, options", [(8, {}), (20, {"reject_worse_svm": False})])
def test_torch_path_matches_numpy_path(n_bits, options):
    # the same algorithm in torch (run here on the CPU): float round-off may flip a few bits and
    # steer later iterates, so compare within a tolerance, not bit for bit
    torch = pytest.importorskip("torch")
    X = _planted(40 + n_bits, n=600, dim=40, n_bits=n_bits, noise=0.8)
    numpy_model = BinaryAutoencoder(n_bits, random_state=0, **options).fit(X)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small problems: threads only add overhead on a shared machine
    try:
        torch_model = BinaryAutoencoder(n_bits, random_state=0, device="torch-cpu", **options).fit(X)
    finally:
        torch.set_num_threads(threads)
    assert (numpy_model.transform(X) == torch_model.transform(X)).mean() >= 0.9
    for column in ("E_BA", "E_Q"):
        assert torch_model.trace_[column].iloc[-1] == pytest.approx(numpy_model.trace_[column].iloc[-1], rel=0.02)
    assert torch_model.converged_ == numpy_model.converged_
    assert abs(torch_model.n_iter_ - numpy_model.n_iter_) <= 3


def test_device_option():
    X = _planted(50, n=200, dim=20, n_bits=4)
    with pytest.raises(ValueError, match="unknown device"):
        BinaryAutoencoder(4, device="tpu").fit(X)
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("checks the fallbacks of a machine without a GPU")
    with pytest.raises(RuntimeError, match="no CUDA GPU"):
        BinaryAutoencoder(4, device="cuda").fit(X)
    auto = BinaryAutoencoder(4, device="auto", random_state=0).fit(X)  # falls back to the numpy path: same arithmetic
    np.testing.assert_array_equal(auto.encode(X), BinaryAutoencoder(4, random_state=0).fit(X).encode(X))


def test_numpy_path_does_not_import_torch():
    import subprocess
    import sys

    code = ("import sys, numpy as np; from cbir.hashing import BinaryAutoencoder; "
            "X = np.random.default_rng(0).standard_normal((100, 10)); BinaryAutoencoder(4, max_iter=3).fit(X); "
            "print('torch' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "False"
