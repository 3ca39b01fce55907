"""Tests for cbir.metrics, against hand-computed cases and brute force."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest

from cbir.codes import pack_bits
from cbir.metrics import (
    average_precision,
    average_precision_at_k,
    count_relevant,
    distance_histograms,
    evaluate_distances,
    holidays_average_precision,
    holidays_mean_average_precision,
    mean_average_precision,
    mean_average_precision_at_k,
    pr_curve_by_k,
    pr_curve_by_radius,
    precision_at_k,
    ranked_relevance,
    recall_at_k,
    relevance_from_labels,
    score_ap_from_ranks_1,
    tie_aware_average_precision_at_k,
    tie_aware_precision_at_k,
    top_k_by_distance,
)
from cbir.search import HammingIndex

T, F = True, False


# --------------------------------------------------------------------------------------------
# precision, recall, AP@k


def test_precision_and_recall_hand_cases():
    rel = np.array([[T, F, T, F, F], [F, F, F, F, F], [T, T, T, T, T]])
    n_relevant = np.array([4, 0, 5])
    np.testing.assert_allclose(precision_at_k(rel, 1), [1, 0, 1])
    np.testing.assert_allclose(precision_at_k(rel, 3), [2 / 3, 0, 1])
    np.testing.assert_allclose(precision_at_k(rel), [2 / 5, 0, 1])
    np.testing.assert_allclose(precision_at_k(rel, 1000), [2 / 5, 0, 1])  # k > list: clamped
    np.testing.assert_allclose(recall_at_k(rel, n_relevant, 3), [2 / 4, 0, 3 / 5])
    np.testing.assert_allclose(recall_at_k(rel, n_relevant, 3, zero_division=np.nan), [2 / 4, np.nan, 3 / 5])
    with pytest.raises(ValueError, match="smaller"):
        recall_at_k(rel, np.array([1, 0, 5]))


def test_average_precision_at_k_hand_cases():
    rel = np.array([[T, F, T, F, F]])
    # P@1 = 1, P@3 = 2/3 -> hashing AP@5 = (1 + 2/3) / 2
    np.testing.assert_allclose(average_precision_at_k(rel, 5), [(1 + 2 / 3) / 2])
    np.testing.assert_allclose(average_precision_at_k(rel, 2), [1.0])  # only one relevant in top 2
    # true AP@k: divide by min(R, k) with R = 4 relevant in the database
    np.testing.assert_allclose(average_precision_at_k(rel, 5, np.array([4]), "min"), [(1 + 2 / 3) / 4])
    np.testing.assert_allclose(average_precision_at_k(rel, 2, np.array([4]), "min"), [1 / 2])
    # trec_eval map_cut: divide by all R
    np.testing.assert_allclose(average_precision_at_k(rel, 2, np.array([4]), "all"), [1 / 4])
    # second relevant at rank 3 -> AP = (1/3 + 2/4)/2 for [F, F, T, T]
    np.testing.assert_allclose(average_precision_at_k(np.array([[F, F, T, T]]), 4), [(1 / 3 + 2 / 4) / 2])
    with pytest.raises(ValueError, match="n_relevant"):
        average_precision_at_k(rel, 5, normalization="min")
    with pytest.raises(ValueError, match="normalization"):
        average_precision_at_k(rel, 5, normalization="bogus")


def test_query_without_relevant_counts_as_zero_in_the_mean():
    rel = np.array([[T, F, F], [F, F, F]])
    np.testing.assert_allclose(average_precision_at_k(rel, 3), [1.0, 0.0])
    assert mean_average_precision_at_k(rel, 3) == pytest.approx(0.5)
    assert mean_average_precision(rel) == pytest.approx(0.5)


def test_k_larger_than_list_is_clamped():
    rel = np.array([[F, T, T]])
    np.testing.assert_allclose(average_precision_at_k(rel, 1000), average_precision_at_k(rel, 3))
    np.testing.assert_allclose(average_precision_at_k(rel, None), [(1 / 2 + 2 / 3) / 2])
    with pytest.raises(ValueError):
        average_precision_at_k(rel, 0)


def test_average_precision_whole_database():
    rel = np.array([[T, F, T, F], [F, F, F, T]])
    np.testing.assert_allclose(average_precision(rel), [(1 + 2 / 3) / 2, 1 / 4])
    # truncated list with 3 relevant items in the database: the missing one contributes 0
    np.testing.assert_allclose(average_precision(rel[:1], np.array([3])), [(1 + 2 / 3) / 3])
    assert mean_average_precision(rel) == pytest.approx(((1 + 2 / 3) / 2 + 1 / 4) / 2)


def test_relevance_helpers():
    q = np.array([1, 2, 9])
    d = np.array([1, 1, 2, 3])
    np.testing.assert_array_equal(relevance_from_labels(q, d), [[T, T, F, F], [F, F, T, F], [F, F, F, F]])
    np.testing.assert_array_equal(count_relevant(q, d), [2, 1, 0])
    indices = np.array([[1, 2, -1], [2, 0, 3], [0, 1, 2]])
    np.testing.assert_array_equal(ranked_relevance(indices, q, d), [[T, F, F], [T, F, F], [F, F, F]])
    # multi-hot: relevant when sharing at least one label
    qm = np.array([[1, 0, 1], [0, 0, 0]])
    dm = np.array([[1, 0, 0], [0, 1, 0], [0, 1, 1]])
    np.testing.assert_array_equal(relevance_from_labels(qm, dm), [[T, F, T], [F, F, F]])
    np.testing.assert_array_equal(count_relevant(qm, dm), [2, 0])
    np.testing.assert_array_equal(ranked_relevance(np.array([[2, 1], [0, 2]]), qm, dm), [[T, F], [F, F]])


# --------------------------------------------------------------------------------------------
# rankings and tie-aware AP


def brute_force_tie_aware(distances, relevant, k, normalization="retrieved"):
    """Mean AP@k over every ordering that sorts the items by distance (all tie permutations)."""
    groups = [np.nonzero(distances == v)[0] for v in np.unique(distances)]
    orders = np.array([np.concatenate(perm) for perm in itertools.product(*[itertools.permutations(g) for g in groups])])
    n_relevant = np.full(len(orders), relevant.sum())
    return float(average_precision_at_k(relevant[orders], k, n_relevant, normalization).mean())


def test_tie_aware_hand_cases():
    # two tied items, one relevant, k = 1: AP@1 is 1 or 0 with probability 1/2 each -> 0.5
    # (the ratio of expectations E[S]/E[R_k] would wrongly give 1)
    assert tie_aware_average_precision_at_k(np.array([[0, 0]]), np.array([[T, F]]), 1)[0] == pytest.approx(0.5)
    # irrelevant item first, then a tie group of 3 with 2 relevant, cut at k = 2:
    # the slot at rank 2 is relevant w.p. 2/3, giving AP = P@2 = 1/2 -> expected 1/3
    d = np.array([[0, 1, 1, 1]])
    rel = np.array([[F, T, T, F]])
    assert tie_aware_average_precision_at_k(d, rel, 2)[0] == pytest.approx(1 / 3)
    # whole ranking of the same: relevant positions uniform among ranks 2..4
    # orders (ranks of the two relevant): {2,3}: (1/2 + 2/3)/2, {2,4}: (1/2 + 2/4)/2, {3,4}: (1/3 + 2/4)/2
    expected = ((1 / 2 + 2 / 3) / 2 + (1 / 2 + 2 / 4) / 2 + (1 / 3 + 2 / 4) / 2) / 3
    assert tie_aware_average_precision_at_k(d, rel, None)[0] == pytest.approx(expected)
    # no relevant item at all
    assert tie_aware_average_precision_at_k(d, np.zeros_like(rel), 3)[0] == 0.0
    # every item tied and relevant
    assert tie_aware_average_precision_at_k(np.zeros((1, 5)), np.ones((1, 5), bool), 3)[0] == pytest.approx(1.0)


def test_tie_aware_equals_brute_force_over_all_orderings():
    rng = np.random.default_rng(0)
    for case in range(250):
        n_items = int(rng.integers(1, 8))
        distances = rng.integers(0, int(rng.integers(1, 4)), n_items)
        if rng.random() < 0.3:
            distances = distances * 0.25 + 0.5  # float distances take the sorting path
        relevant = rng.random(n_items) < rng.random()
        k = int(rng.integers(1, n_items + 2))  # includes k > N
        normalization = ("retrieved", "retrieved", "min", "all")[case % 4]
        got = tie_aware_average_precision_at_k(distances[None], relevant[None], k, normalization)[0]
        assert got == pytest.approx(brute_force_tie_aware(distances, relevant, k, normalization), abs=1e-12)


def test_tie_aware_rows_are_independent_and_batched():
    rng = np.random.default_rng(1)
    distances = rng.integers(0, 4, (6, 7))
    relevant = rng.random((6, 7)) < 0.4
    relevant[2] = False  # a query with no relevant item
    batched = tie_aware_average_precision_at_k(distances, relevant, 3)
    for q in range(6):
        assert batched[q] == pytest.approx(brute_force_tie_aware(distances[q], relevant[q], 3), abs=1e-12)
    assert batched[2] == 0.0


def test_tie_aware_matches_monte_carlo_on_larger_groups():
    # 300 items with Hamming-like distances 0..6 (big tie groups), several cut-offs
    rng = np.random.default_rng(5)
    distances = rng.binomial(6, 0.5, 300)
    relevant = rng.random(300) < np.where(distances < 3, 0.6, 0.2)
    n_samples = 3000
    keys = distances[None, :] + 0.5 * rng.random((n_samples, 300))  # random order within ties
    rel = relevant[np.argsort(keys, axis=1)]
    for k in (1, 37, 100, 299, 300):
        samples = average_precision_at_k(rel, k)
        expected = tie_aware_average_precision_at_k(distances[None], relevant[None], k)[0]
        assert abs(samples.mean() - expected) <= 5 * samples.std() / np.sqrt(n_samples) + 1e-12


def test_tie_aware_without_ties_equals_conventional():
    rng = np.random.default_rng(2)
    distances = rng.standard_normal((20, 300))
    relevant = rng.random((20, 300)) < 0.2
    rel = np.take_along_axis(relevant, np.argsort(distances, axis=1), axis=1)
    for k in (1, 10, 100, 300):
        np.testing.assert_allclose(tie_aware_average_precision_at_k(distances, relevant, k), average_precision_at_k(rel, k), atol=1e-12)


@pytest.mark.parametrize("dtype", [np.int32, np.uint8, np.float64, np.float32])
@pytest.mark.parametrize("ties", ["everywhere", "in some rows"])
def test_top_k_by_distance_is_stable(dtype, ties):
    rng = np.random.default_rng(3)
    if ties == "everywhere":
        distances = rng.integers(0, 5, (10, 50)).astype(dtype)
    else:  # distinct values, but for two rows that repeat some
        distances = rng.permutation(np.arange(500)).reshape(10, 50).astype(dtype)
        distances[[2, 7], 10:20] = distances[[2, 7], 0:10]
    for k in (1, 7, 49, 50, 500):
        np.testing.assert_array_equal(top_k_by_distance(distances, k), np.argsort(distances, axis=1, kind="stable")[:, :k])


def test_top_k_by_distance_of_wide_and_negative_integers():
    rng = np.random.default_rng(5)
    for low, high in ((-3, 3), (0, 70000)):
        distances = rng.integers(low, high, (6, 40))
        np.testing.assert_array_equal(top_k_by_distance(distances, 11), np.argsort(distances, axis=1, kind="stable")[:, :11])


def test_evaluate_distances_matches_faiss_ranking():
    rng = np.random.default_rng(4)
    n_bits, n_db, n_q = 16, 400, 25
    db_labels = rng.integers(0, 5, n_db)
    q_labels = rng.integers(0, 6, n_q)  # label 5 has no relevant item in the database
    centers = (rng.random((6, n_bits)) < 0.5).astype(np.uint8)
    db = pack_bits(centers[db_labels] ^ (rng.random((n_db, n_bits)) < 0.25))
    q = pack_bits(centers[q_labels] ^ (rng.random((n_q, n_bits)) < 0.25))
    index = HammingIndex(n_bits)
    index.add(db)
    distances = index.pairwise(q)
    frame = evaluate_distances(distances, query_labels=q_labels, database_labels=db_labels, k=50, chunk_size=7)
    true_ap = evaluate_distances(distances, query_labels=q_labels, database_labels=db_labels, k=50, normalization="min")
    assert true_ap.attrs["normalization"] == "min"
    assert list(frame.columns) == ["n_relevant", "ap", "tie_aware_ap", "precision", "recall"]
    assert frame.attrs["k"] == 50 and len(frame) == n_q
    _, indices = index.search(q, 50)
    rel = ranked_relevance(indices, q_labels, db_labels)
    np.testing.assert_allclose(frame["ap"], average_precision_at_k(rel, 50))
    n_rel = count_relevant(q_labels, db_labels)
    np.testing.assert_allclose(true_ap["ap"], average_precision_at_k(rel, 50, n_rel, "min"))
    relevant = relevance_from_labels(q_labels, db_labels)
    np.testing.assert_allclose(true_ap["tie_aware_ap"], tie_aware_average_precision_at_k(distances, relevant, 50, "min"))
    np.testing.assert_allclose(frame["precision"], precision_at_k(rel, 50))
    n_rel = count_relevant(q_labels, db_labels)
    np.testing.assert_array_equal(frame["n_relevant"], n_rel)
    np.testing.assert_allclose(frame["recall"], recall_at_k(rel, n_rel, 50))
    relevant = relevance_from_labels(q_labels, db_labels)
    np.testing.assert_allclose(frame["tie_aware_ap"], tie_aware_average_precision_at_k(distances, relevant, 50))
    assert (frame.loc[q_labels == 5, ["ap", "tie_aware_ap", "recall"]] == 0).all().all()
    # same with an explicit relevance matrix and another chunking
    other = evaluate_distances(distances, relevant, k=50, chunk_size=1000)
    pd.testing.assert_frame_equal(frame, other)
    # k=None: classic whole-database AP
    whole = evaluate_distances(distances, relevant, k=None)
    _, all_indices = index.search(q, n_db)
    np.testing.assert_allclose(whole["ap"], average_precision(ranked_relevance(all_indices, q_labels, db_labels), n_rel))
    np.testing.assert_allclose(whole["recall"], np.where(n_rel > 0, 1.0, 0.0))
    with pytest.raises(ValueError):
        evaluate_distances(distances, relevant, query_labels=q_labels, database_labels=db_labels)
    with pytest.raises(ValueError):
        evaluate_distances(distances, relevant[:, :10])


# --------------------------------------------------------------------------------------------
# PR curves


def test_pr_curve_by_radius_hand_case():
    distances = np.array([[0, 1, 1, 2], [2, 2, 1, 1]])
    relevant = np.array([[T, F, T, F], [T, F, F, F]])
    rel_c, irr_c = distance_histograms(distances, relevant, 2)
    np.testing.assert_array_equal(rel_c, [[1, 1, 0], [0, 0, 1]])
    np.testing.assert_array_equal(irr_c, [[0, 1, 1], [0, 2, 1]])
    curve = pr_curve_by_radius(rel_c, irr_c)
    assert list(curve.columns) == ["radius", "precision", "recall", "retrieving", "retrieved"]
    # radius 0: query 0 retrieves 1 relevant (P=1, R=1/2); query 1 retrieves nothing (skipped)
    # radius 1: query 0 P=2/3 R=1; query 1 P=0 R=0
    # radius 2: query 0 P=2/4 R=1; query 1 P=1/4 R=1
    np.testing.assert_allclose(curve["precision"], [1.0, (2 / 3 + 0) / 2, (1 / 2 + 1 / 4) / 2])
    np.testing.assert_allclose(curve["recall"], [1 / 4, 1 / 2, 1.0])
    np.testing.assert_allclose(curve["retrieving"], [0.5, 1.0, 1.0])
    np.testing.assert_allclose(curve["retrieved"], [0.5, 2.5, 4.0])
    zero = pr_curve_by_radius(rel_c, irr_c, empty="zero")
    np.testing.assert_allclose(zero["precision"], [0.5, (2 / 3 + 0) / 2, (1 / 2 + 1 / 4) / 2])
    # nobody retrieves anything at radius 0 -> NaN with "skip"
    curve = pr_curve_by_radius(np.array([[0, 1]]), np.array([[0, 1]]))
    assert np.isnan(curve["precision"][0]) and curve["precision"][1] == 0.5
    with pytest.raises(ValueError):
        distance_histograms(distances, relevant, 1)  # distance 2 out of range


def test_pr_curve_by_k_hand_case():
    rel = np.array([[T, F, T, F], [F, T, F, F]])
    n_relevant = np.array([2, 3])
    curve = pr_curve_by_k(rel, n_relevant, [1, 2, 4, 10])
    assert list(curve.columns) == ["k", "precision", "recall"]
    np.testing.assert_array_equal(curve["k"], [1, 2, 4, 10])
    np.testing.assert_allclose(curve["precision"], [0.5, 0.5, 3 / 8, 3 / 8])
    np.testing.assert_allclose(curve["recall"], [1 / 4, (1 / 2 + 1 / 3) / 2, (1 + 1 / 3) / 2, (1 + 1 / 3) / 2])


# --------------------------------------------------------------------------------------------
# Holidays


def test_score_ap_from_ranks_1_hand_cases():
    assert score_ap_from_ranks_1([0], 1) == 1.0
    # positive at rank 1: trapezoid between precision 0/1 = 0 and 1/2
    assert score_ap_from_ranks_1([1], 1) == pytest.approx(0.25)
    # ranks 0 and 2 of 2 positives: 0.5 * (1 + 1)/2 + 0.5 * (1/2 + 2/3)/2
    assert score_ap_from_ranks_1([0, 2], 2) == pytest.approx(0.5 + (1 / 2 + 2 / 3) / 4)
    # one of two positives never retrieved
    assert score_ap_from_ranks_1([0], 2) == pytest.approx(0.5)
    assert score_ap_from_ranks_1([], 3) == 0.0
    assert score_ap_from_ranks_1([], 0) == 0.0


def test_holidays_average_precision_excludes_the_query():
    # the query comes first in its own list: ranks of a and b shift from 1, 3 to 0, 2
    ap = holidays_average_precision(["q", "a", "x", "b"], {"a", "b"}, query_id="q")
    assert ap == pytest.approx(0.5 + (1 / 2 + 2 / 3) / 4)
    # query in the middle: only ranks after it shift
    ap = holidays_average_precision(["a", "x", "q", "b"], {"a", "b"}, query_id="q")
    assert ap == pytest.approx(score_ap_from_ranks_1([0, 2], 2))
    # query absent from the list, and listed among its own relevant ids (ignored)
    ap = holidays_average_precision(["x", "a"], {"a", "q"}, query_id="q")
    assert ap == pytest.approx(0.25)
    # truncated list: b never retrieved
    assert holidays_average_precision(["q", "a"], ["a", "b"], "q") == pytest.approx(0.5)
    results = {"q1": ["q1", "a", "x", "b"], "q2": ["y", "c"]}
    truth = {"q1": {"a", "b"}, "q2": {"c"}}
    assert holidays_mean_average_precision(results, truth) == pytest.approx((0.5 + (1 / 2 + 2 / 3) / 4 + 0.25) / 2)
    with pytest.raises(KeyError):
        holidays_mean_average_precision({"q1": ["a"]}, truth)


# --------------------------------------------------------------------------------------------
# validation


def test_bad_inputs_raise():
    with pytest.raises(ValueError):
        precision_at_k(np.array([T, F]))  # 1-D
    with pytest.raises(ValueError):
        precision_at_k(np.array([[0.5, 1.0]]))
    with pytest.raises(ValueError):
        tie_aware_average_precision_at_k(np.zeros((2, 3)), np.zeros((2, 4), bool))
    with pytest.raises(ValueError, match="NaN"):
        tie_aware_average_precision_at_k(np.array([[np.nan, 0.0]]), np.zeros((1, 2), bool))
    with pytest.raises(ValueError):
        recall_at_k(np.array([[T]]), np.array([-1]))
    with pytest.raises(ValueError):
        relevance_from_labels(np.array([1, 2]), np.zeros((3, 2)))


def test_neighbour_relevance_includes_ties_at_the_kth_distance():
    from cbir.metrics import neighbour_relevance

    database = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [3.0, 0.0], [1.0, 0.0]], dtype=np.float32)
    queries = np.array([[0.0, 0.0], [2.9, 0.0]], dtype=np.float32)
    got = neighbour_relevance(queries, database, 2)
    # Query 0: itself at 0, then four items tied at distance 1: all of them are neighbours.
    np.testing.assert_array_equal(got[0], [True, True, True, True, False, True])
    # Query 1: (3, 0) at 0.1, then the two copies of (1, 0) tied at 1.9.
    np.testing.assert_array_equal(got[1], [False, True, False, False, True, True])
    assert neighbour_relevance(queries, database, 1).sum(1).tolist() == [1, 1]
    assert neighbour_relevance(queries, database, 100).all()
    with pytest.raises(ValueError, match="n_neighbours"):
        neighbour_relevance(queries, database, 0)


def test_tie_aware_precision_is_the_mean_over_orderings():
    from cbir.metrics import tie_aware_precision_at_k

    rng = np.random.default_rng(3)
    distances = rng.integers(0, 4, (5, 9))
    relevant = rng.random((5, 9)) < 0.4
    got = tie_aware_precision_at_k(distances, relevant, [1, 3, 9, 20])
    for q in range(5):
        # Brute force: the mean over many random tie orders converges to the expectation; an
        # exact check is the average over random keys breaking ties, 20,000 draws.
        keys = distances[q][None, :] + rng.random((20000, 9)) * 0.5
        order = np.argsort(keys, axis=1)
        hits = np.cumsum(relevant[q][order], axis=1)
        for j, k in enumerate([1, 3, 9, 9]):
            assert got[q, j] == pytest.approx(hits[:, k - 1].mean() / k, abs=0.01)
    # Without ties it is the conventional precision@k.
    distinct = np.argsort(rng.random((4, 9)), axis=1)
    rel = rng.random((4, 9)) < 0.5
    ranked = np.take_along_axis(rel, np.argsort(distinct, axis=1), axis=1)
    np.testing.assert_allclose(tie_aware_precision_at_k(distinct, rel, [4])[:, 0], ranked[:, :4].mean(1))


@pytest.mark.parametrize("dtype", [np.int32, np.float32])
def test_a_ranking_passed_in_changes_no_number(dtype):
    """evaluate_distances and tie_aware_precision_at_k given the rows' full ranking (as the
    evaluation stage passes it, to sort once) equal the results that sort for themselves."""
    rng = np.random.default_rng(7)
    distances = rng.integers(0, 20, (30, 80)).astype(dtype)
    relevant = rng.random((30, 80)) < 0.3
    order = top_k_by_distance(distances, None)
    for k in (10, None):
        pd.testing.assert_frame_equal(evaluate_distances(distances, relevant, k, chunk_size=7), evaluate_distances(distances, relevant, k, chunk_size=7, order=order))
    np.testing.assert_array_equal(tie_aware_precision_at_k(distances, relevant, [1, 5, 50]), tie_aware_precision_at_k(distances, relevant, [1, 5, 50], order=order))
