"""Tests for cbir.search: exact Hamming/Euclidean search against numpy references, ANN, helpers."""

from __future__ import annotations

import faiss
import numpy as np
import pytest

from cbir.codes import n_bytes, pack_bits, unpack_bits
from cbir.io import Descriptors
from cbir.search import (
    MISSING_DISTANCE,
    ApproximateHammingIndex,
    EuclideanIndex,
    HammingIndex,
    make_index,
    pairwise_distances,
    pairwise_hamming,
    recall_at_k,
    summarize_query_times,
    time_queries,
)


def random_bits(rng, n, n_bits, p=0.5):
    return (rng.random((n, n_bits)) < p).astype(np.uint8)


def brute_force_hamming(query_bits, database_bits, k):
    """Reference: popcount on unpacked bits, stable sort (ties by database index)."""
    dist = (query_bits[:, None, :] != database_bits[None, :, :]).sum(-1).astype(np.int32)
    order = np.argsort(dist, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(dist, order, axis=1), order


# --------------------------------------------------------------------------------------------
# codes


@pytest.mark.parametrize("n_bits", range(1, 65))
def test_pack_unpack_round_trip_and_distances(n_bits):
    rng = np.random.default_rng(n_bits)
    bits = random_bits(rng, 20, n_bits)
    codes = pack_bits(bits)
    assert codes.dtype == np.uint8 and codes.shape == (20, n_bytes(n_bits))
    np.testing.assert_array_equal(unpack_bits(codes, n_bits), bits)
    # zero padding: packed distances equal bit-level distances
    expected = (bits[:10, None, :] != bits[None, :, :]).sum(-1)
    np.testing.assert_array_equal(pairwise_hamming(codes[:10], codes, n_bits), expected)


# --------------------------------------------------------------------------------------------
# exact Hamming search


@pytest.mark.parametrize("n_bits", [1, 3, 8, 12, 16, 31, 48, 64])
@pytest.mark.parametrize("use_heap", [None, True, False])
def test_hamming_matches_brute_force_exactly(n_bits, use_heap):
    rng = np.random.default_rng(100 + n_bits)
    db_bits = random_bits(rng, 700, n_bits)
    q_bits = random_bits(rng, 40, n_bits)
    index = HammingIndex(n_bits, use_heap=use_heap)
    index.add(pack_bits(db_bits))
    for k in (1, 5, 100, 700):
        distances, indices = index.search(pack_bits(q_bits), k)
        ref_d, ref_i = brute_force_hamming(q_bits, db_bits, k)
        assert distances.dtype == np.int32 and indices.dtype == np.int64
        np.testing.assert_array_equal(distances, ref_d)
        # many ties for small n_bits: faiss breaks them by database index, like a stable sort
        np.testing.assert_array_equal(indices, ref_i)


def test_hamming_ties_broken_by_database_index_at_cut_off():
    n_bits = 16
    base = np.zeros((1, n_bits), np.uint8)
    far = np.ones((1, n_bits), np.uint8)
    # database: far, tie, tie, far, tie, tie, tie ; all "tie" rows at distance 0 from the query
    rows = [far, base, base, far, base, base, base]
    index = HammingIndex(n_bits)
    index.add(pack_bits(np.concatenate(rows)))
    distances, indices = index.search(pack_bits(base), 3)
    np.testing.assert_array_equal(indices, [[1, 2, 4]])  # smallest indices among the 5 tied
    np.testing.assert_array_equal(distances, [[0, 0, 0]])
    distances, indices = index.search(pack_bits(base), 7)
    np.testing.assert_array_equal(indices, [[1, 2, 4, 5, 6, 0, 3]])
    np.testing.assert_array_equal(distances, [[0, 0, 0, 0, 0, 16, 16]])


def test_hamming_k_larger_than_database_is_clamped():
    rng = np.random.default_rng(0)
    db_bits = random_bits(rng, 5, 10)
    index = HammingIndex(10)
    index.add(pack_bits(db_bits))
    distances, indices = index.search(pack_bits(db_bits[:2]), 50)
    assert distances.shape == indices.shape == (2, 5)
    assert set(indices[0]) == set(range(5)) and (indices >= 0).all()
    np.testing.assert_array_equal(distances[:, 0], [0, 0])


def test_hamming_add_in_several_batches_and_reset():
    rng = np.random.default_rng(1)
    db_bits = random_bits(rng, 300, 24)
    q_bits = random_bits(rng, 10, 24)
    index = HammingIndex(24)
    index.add(pack_bits(db_bits[:100]))
    index.add(pack_bits(db_bits[100:]))
    assert index.ntotal == len(index) == 300
    np.testing.assert_array_equal(index.codes, pack_bits(db_bits))
    ref_d, ref_i = brute_force_hamming(q_bits, db_bits, 20)
    distances, indices = index.search(pack_bits(q_bits), 20)
    np.testing.assert_array_equal(indices, ref_i)
    np.testing.assert_array_equal(distances, ref_d)
    np.testing.assert_array_equal(index.pairwise(pack_bits(q_bits)), pairwise_hamming(pack_bits(q_bits), pack_bits(db_bits), 24))
    index.reset()
    assert index.ntotal == 0


def test_chunking_gives_identical_results():
    rng = np.random.default_rng(2)
    db = pack_bits(random_bits(rng, 1000, 20))
    queries = pack_bits(random_bits(rng, 45, 20))
    index = HammingIndex(20)
    index.add(db)
    whole = index.search(queries, 64, chunk_size=10_000)
    for chunk_size in (1, 7, 32, 45):
        chunked = index.search(queries, 64, chunk_size=chunk_size)
        np.testing.assert_array_equal(chunked[0], whole[0])
        np.testing.assert_array_equal(chunked[1], whole[1])
    with pytest.raises(ValueError):
        index.iter_search(queries, 0)  # validated at the call, not at the first next()
    parts = list(index.iter_search(queries, 64, chunk_size=20))
    assert [start for start, _, _ in parts] == [0, 20, 40]
    np.testing.assert_array_equal(np.concatenate([d for _, d, _ in parts]), whole[0])
    np.testing.assert_array_equal(np.concatenate([i for _, _, i in parts]), whole[1])

    x = rng.standard_normal((400, 16)).astype(np.float32)
    euclid = EuclideanIndex(16)
    euclid.add(x)
    a = euclid.search(x[:37], 10, chunk_size=5)
    b = euclid.search(x[:37], 10, chunk_size=1000)
    np.testing.assert_array_equal(a[1], b[1])
    np.testing.assert_allclose(a[0], b[0], rtol=1e-6, atol=1e-6)


def test_no_queries_gives_empty_result():
    index = HammingIndex(8)
    index.add(np.zeros((3, 1), np.uint8))
    distances, indices = index.search(np.zeros((0, 1), np.uint8), 2)
    assert distances.shape == indices.shape == (0, 2)


# --------------------------------------------------------------------------------------------
# Euclidean / cosine


def test_euclidean_matches_numpy():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((500, 24)).astype(np.float32)
    q = rng.standard_normal((30, 24)).astype(np.float32)
    index = EuclideanIndex(24, "l2")
    index.add(x)
    distances, indices = index.search(q, 15)
    ref = np.sqrt(((q[:, None, :].astype(np.float64) - x[None]) ** 2).sum(-1))
    ref_i = np.argsort(ref, axis=1, kind="stable")[:, :15]
    np.testing.assert_array_equal(indices, ref_i)
    np.testing.assert_allclose(distances, np.take_along_axis(ref, ref_i, 1), rtol=1e-4, atol=1e-4)
    assert distances.dtype == np.float32
    np.testing.assert_allclose(index.pairwise(q), ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(pairwise_distances(q, x, "l2"), ref, rtol=1e-5, atol=1e-5)
    # self-search: distance 0 to itself
    d_self, i_self = index.search(x[:5], 1)
    np.testing.assert_array_equal(i_self[:, 0], np.arange(5))
    np.testing.assert_allclose(d_self[:, 0], 0, atol=1e-3)


def test_cosine_matches_numpy_including_zero_vector():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((300, 12)).astype(np.float32)
    x[7] = 0.0
    q = rng.standard_normal((20, 12)).astype(np.float32)
    index = EuclideanIndex(12, metric="cosine")
    index.add(x)
    distances, indices = index.search(q, 300)
    norms = np.linalg.norm(x, axis=1)
    cos = (q @ x.T) / np.linalg.norm(q, axis=1)[:, None] / np.where(norms > 0, norms, 1)[None]
    ref = 1 - cos
    ref_i = np.argsort(ref, axis=1, kind="stable")
    np.testing.assert_allclose(distances, np.take_along_axis(ref, ref_i, 1), atol=1e-5)
    np.testing.assert_array_equal(indices[:, :20], ref_i[:, :20])
    # the zero vector is at cosine distance exactly 1 from everything
    where_zero = np.nonzero(indices == 7)
    np.testing.assert_allclose(distances[where_zero], 1.0, atol=1e-6)
    np.testing.assert_allclose(pairwise_distances(q, x, "cosine"), ref, atol=1e-5)
    assert ((distances >= -1e-6) & (distances <= 2 + 1e-6)).all()


# --------------------------------------------------------------------------------------------
# approximate Hamming search


@pytest.mark.parametrize("method", ["multihash", "hash"])
@pytest.mark.parametrize("n_bits", [12, 30, 64])
def test_approximate_is_exact_within_guaranteed_radius(method, n_bits):
    rng = np.random.default_rng(n_bits)
    # clustered codes: queries have close neighbours, as real hash codes do
    centers = random_bits(rng, 20, n_bits)
    db_bits = centers[rng.integers(0, 20, 2000)] ^ random_bits(rng, 2000, n_bits, p=0.04)
    q_bits = centers[rng.integers(0, 20, 30)] ^ random_bits(rng, 30, n_bits, p=0.04)
    exact = HammingIndex(n_bits)
    exact.add(pack_bits(db_bits))
    approx = ApproximateHammingIndex(n_bits, method=method, nflip=2)
    approx.add(pack_bits(db_bits))
    assert approx.ntotal == 2000
    radius = approx.guaranteed_radius
    all_d, all_i = exact.search(pack_bits(q_bits), 2000)
    a_d, a_i = approx.search(pack_bits(q_bits), 2000)
    for q in range(len(q_bits)):
        within = set(all_i[q][all_d[q] <= radius])
        found = a_i[q][a_i[q] >= 0]
        assert within <= set(found), "an item inside the guaranteed radius was missed"
        # reported distances are exact, sorted, and refer to the right items
        np.testing.assert_array_equal(a_d[q][: len(found)], all_d[q][np.argsort(all_i[q])][found])
        assert (np.diff(a_d[q][: len(found)]) >= 0).all()
        assert (a_d[q][len(found) :] == MISSING_DISTANCE).all() and (a_i[q][len(found) :] == -1).all()


def test_approximate_with_enough_flips_equals_exact():
    rng = np.random.default_rng(5)
    db_bits = random_bits(rng, 500, 8)
    q_bits = random_bits(rng, 20, 8)
    approx = ApproximateHammingIndex(8, method="hash", nflip=8)  # probes every bucket
    approx.add(pack_bits(db_bits))
    exact = HammingIndex(8)
    exact.add(pack_bits(db_bits))
    e_d, e_i = exact.search(pack_bits(q_bits), 50)
    a_d, a_i = approx.search(pack_bits(q_bits), 50)
    np.testing.assert_array_equal(a_d, e_d)
    assert recall_at_k(e_i, a_i, e_d, a_d) == 1.0


def test_recall_at_k_hand_cases():
    exact_i = np.array([[0, 1, 2, 3], [4, 5, 6, 7]])
    approx_i = np.array([[3, 2, 9, -1], [4, 5, 6, 7]])
    assert recall_at_k(exact_i, approx_i) == pytest.approx((2 / 4 + 1) / 2)
    # tie tolerant: exact distances [1, 2, 2, 2]; approx returns 0 (d=1), 9 (d=2), 8 (d=2), 5 (d=2)
    exact_d = np.array([[1, 2, 2, 2]])
    approx_i = np.array([[0, 9, 8, 5]])
    approx_d = np.array([[1, 2, 2, 2]])
    assert recall_at_k(exact_i[:1], approx_i) == pytest.approx(1 / 4)
    assert recall_at_k(exact_i[:1], approx_i, exact_d, approx_d) == 1.0
    # a worse item in place of a better one is not excused: exact [1,1,2,2], approx [1,2,2,2]
    assert recall_at_k(exact_i[:1], approx_i, np.array([[1, 1, 2, 2]]), approx_d) == pytest.approx(3 / 4)
    with pytest.raises(ValueError):
        recall_at_k(exact_i, approx_i)
    with pytest.raises(ValueError):
        recall_at_k(exact_i[:1], approx_i, exact_d, None)


def test_approximate_bad_parameters():
    with pytest.raises(ValueError):
        ApproximateHammingIndex(64, method="lsh")
    with pytest.raises(ValueError):
        ApproximateHammingIndex(64, nhash=3, bits_per_hash=32)
    with pytest.raises(ValueError):
        ApproximateHammingIndex(64, method="hash", nhash=2)
    with pytest.raises(ValueError):
        ApproximateHammingIndex(16, nflip=-1)
    assert ApproximateHammingIndex(64).guaranteed_radius == 4 * 2 - 1


# --------------------------------------------------------------------------------------------
# make_index, timing


def test_make_index_picks_index_type():
    rng = np.random.default_rng(6)
    codes = pack_bits(random_bits(rng, 50, 32))
    floats = rng.standard_normal((50, 8)).astype(np.float32)
    assert isinstance(make_index(codes, n_bits=32), HammingIndex)
    assert isinstance(make_index(codes, n_bits=32, approximate=True, nflip=0), ApproximateHammingIndex)
    index = make_index(floats, metric="cosine")
    assert isinstance(index, EuclideanIndex) and index.metric == "cosine" and index.ntotal == 50
    descriptors = Descriptors(
        image_id=np.array([str(i) for i in range(50)]),
        label=np.zeros(50, np.int64),
        train=np.zeros(50, bool),
        database=np.ones(50, bool),
        query=np.zeros(50, bool),
        values=codes,
        n_bits=32,
    )
    index = make_index(descriptors)
    assert isinstance(index, HammingIndex) and index.n_bits == 32 and index.ntotal == 50
    with pytest.raises(ValueError, match="Hamming"):
        make_index(codes, n_bits=32, metric="l2")
    with pytest.raises(ValueError, match="n_bits"):
        make_index(codes)
    with pytest.raises(ValueError):
        make_index(floats, approximate=True)


def test_time_queries():
    rng = np.random.default_rng(7)
    index = make_index(pack_bits(random_bits(rng, 200, 16)), n_bits=16)
    queries = pack_bits(random_bits(rng, 12, 16))
    times = time_queries(index, queries, 10)
    assert times.shape == (12,) and (times > 0).all()
    threads = faiss.omp_get_max_threads()
    times = time_queries(index, queries, 10, n_queries=5, seed=1, n_threads=1)
    assert faiss.omp_get_max_threads() == threads  # restored
    summary = summarize_query_times(times)
    assert summary["n"] == 5 and 0 < summary["median_s"] <= summary["p95_s"] <= summary["max_s"]


# --------------------------------------------------------------------------------------------
# bad inputs


def test_bad_inputs_raise():
    index = HammingIndex(12)
    with pytest.raises(ValueError, match="empty"):
        index.search(np.zeros((1, 2), np.uint8), 1)
    with pytest.raises(ValueError, match="uint8"):
        index.add(np.zeros((3, 2), np.int64))
    with pytest.raises(ValueError, match="shape"):
        index.add(np.zeros((3, 3), np.uint8))  # 12 bits take 2 bytes
    with pytest.raises(ValueError, match="shape"):
        index.add(np.zeros(2, np.uint8))
    with pytest.raises(ValueError, match="padding"):
        index.add(np.array([[0, 0b0000_0001]], np.uint8))  # low 4 bits of the last byte are padding
    index.add(pack_bits(np.ones((3, 12), np.uint8)))
    for k in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="k"):
            index.search(pack_bits(np.ones((1, 12), np.uint8)), k)
    with pytest.raises(ValueError):
        index.search(np.zeros((1, 1), np.uint8), 1)
    with pytest.raises(ValueError):
        index.search(pack_bits(np.ones((1, 12), np.uint8)), 1, chunk_size=0)
    for n_bits in (0, 65, 8.0):
        with pytest.raises(ValueError):
            HammingIndex(n_bits)

    euclid = EuclideanIndex(4)
    with pytest.raises(ValueError, match="empty"):
        euclid.search(np.zeros((1, 4), np.float32), 1)
    with pytest.raises(ValueError, match="shape"):
        euclid.add(np.zeros((2, 5), np.float32))
    with pytest.raises(ValueError, match="NaN"):
        euclid.add(np.array([[0, 1, np.nan, 0]], np.float32))
    with pytest.raises(ValueError, match="numeric"):
        euclid.add(np.zeros((2, 4), bool))
    euclid.add(np.zeros((2, 4), np.float32))
    with pytest.raises(ValueError, match="shape"):
        euclid.search(np.zeros((1, 3), np.float32), 1)
    with pytest.raises(ValueError, match="metric"):
        EuclideanIndex(4, metric="manhattan")
    with pytest.raises(ValueError):
        EuclideanIndex(0)
