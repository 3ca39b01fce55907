"""The retrieval and evaluation stages on small descriptor files."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cbir.codes import pack_bits
from cbir.evaluation import evaluate, evaluate_all
from cbir.io import write_descriptors
from cbir.metrics import average_precision_at_k


def descriptor_file(tmp_path, binary: bool, n_db=60, n_q=12, seed=0):
    rng = np.random.default_rng(seed)
    labels = np.concatenate([np.arange(n_db) % 3, np.arange(n_q) % 3])
    index = pd.DataFrame(
        {"image_id": [f"i{i}" for i in range(n_db + n_q)], "label": labels, "train": np.r_[np.ones(n_db, bool), np.zeros(n_q, bool)]}
    )
    index["database"] = index["train"]
    index["query"] = ~index["train"]
    centres = rng.normal(size=(3, 16))
    values = centres[labels] + rng.normal(scale=1.0, size=(len(labels), 16))
    path = tmp_path / "d.parquet"
    if binary:
        write_descriptors(path, index, pack_bits(values > 0), n_bits=16)
    else:
        write_descriptors(path, index, values.astype(np.float32))
    return path


def outputs(tmp_path) -> dict:
    return {name: tmp_path / f"{name}.parquet" for name in ("ranking", "timing", "per_query", "summary", "pr")}


@pytest.mark.parametrize("binary", [True, False])
def test_ranking_and_metrics_agree(tmp_path, binary):
    path = descriptor_file(tmp_path, binary)
    out = outputs(tmp_path)
    evaluate(path, out, k=1000, n_timed=5)
    ranking = pd.read_parquet(out["ranking"])
    assert len(ranking) == 12 * 60 and ranking.groupby("query_id")["rank"].max().eq(60).all()
    per_query = pd.read_parquet(out["per_query"]).set_index("query_id")
    assert set(per_query["ground_truth"]) == {"labels"}  # no reference features: labels only
    for query, hits in ranking.groupby("query_id"):
        hits = hits.sort_values("rank")
        assert (np.diff(hits["distance"]) >= 0).all()
        rel = hits["relevant"].to_numpy()[None]
        # The AP is computed on this very ranking (ties by database position).
        assert per_query.loc[query, "map"] == pytest.approx(average_precision_at_k(rel, 1000)[0])
        assert per_query.loc[query, "p@10"] == pytest.approx(rel[0, :10].mean())
    summary = pd.read_parquet(out["summary"]).iloc[0]
    assert summary["n_queries"] == 12 and summary["n_database"] == 60 and summary["k"] == 60
    assert summary["map"] == pytest.approx(per_query["map"].mean())
    curves = pd.read_parquet(out["pr"])
    assert set(curves["curve"]) == ({"top-k", "hamming-radius"} if binary else {"top-k"})


def test_ranking_equals_a_faiss_search(tmp_path):
    """The ranking comes from the full distance rows; a search of the index gives the same list."""
    from cbir.io import read_descriptors
    from cbir.search import make_index

    path = descriptor_file(tmp_path, binary=True)
    out = outputs(tmp_path)
    evaluate(path, out, k=20, n_timed=5)
    descriptors = read_descriptors(path)
    database, queries = descriptors.subset("database"), descriptors.subset("query")
    distances, indices = make_index(database.values, n_bits=16).search(queries.values, 20)
    ranking = pd.read_parquet(out["ranking"])
    np.testing.assert_array_equal(ranking["image_id"].to_numpy().reshape(12, 20), database.image_id[indices])
    np.testing.assert_array_equal(ranking["distance"].to_numpy().reshape(12, 20), distances)


def test_neighbours_ground_truth_from_reference_features(tmp_path):
    """Codes that are the signs of the features: the neighbours ground truth is measured in the
    features' (L2-normalised) space, and codes of more bits keep more of the true neighbours."""
    rng = np.random.default_rng(1)
    n_db, n_q = 200, 20
    features = rng.normal(size=(n_db + n_q, 64)).astype(np.float32)
    index = pd.DataFrame({"image_id": [f"i{i}" for i in range(n_db + n_q)], "label": np.arange(n_db + n_q) % 4})
    index["train"] = index["database"] = np.arange(n_db + n_q) < n_db
    index["query"] = ~index["database"]
    reference = tmp_path / "features.parquet"
    write_descriptors(reference, index, features)
    scores = {}
    for bits in (4, 64):
        codes = tmp_path / f"codes{bits}.parquet"
        write_descriptors(codes, index, pack_bits(features[:, :bits] > 0), n_bits=bits)
        out = {name: tmp_path / f"{name}{bits}.parquet" for name in ("ranking", "timing", "per_query", "summary", "pr")}
        evaluate(codes, out, k=50, reference_path=reference, n_neighbours=10, n_timed=3)
        summary = pd.read_parquet(out["summary"]).set_index("ground_truth")
        assert set(summary.index) == {"labels", "neighbours"}
        per_query = pd.read_parquet(out["per_query"])
        assert (per_query.loc[per_query["ground_truth"] == "neighbours", "n_relevant"] == 10).all()  # no ties in random features
        scores[bits] = summary.loc["neighbours", "tie_aware_p@K"]
    assert 0 <= scores[4] < scores[64] <= 1
    # Euclidean search of the features finds every true neighbour in their own space, and fewer
    # in the L2-normalised space: the preprocessing defines the ground truth.
    found = {}
    for preprocess in ("none", "l2"):
        out = {name: tmp_path / f"{name}-{preprocess}.parquet" for name in ("ranking", "timing", "per_query", "summary", "pr")}
        evaluate(reference, out, k=50, reference_path=reference, preprocess=preprocess, n_neighbours=10, n_timed=3)
        found[preprocess] = pd.read_parquet(out["summary"]).set_index("ground_truth").loc["neighbours", "p@K"]
    assert found["none"] == pytest.approx(1.0) and found["l2"] < 0.95


def test_holidays_ap_by_hand(tmp_path):
    """One query; database items at distances 1, 2, 3, 4 (1-D), relevant at ranks 1 and 3. The
    official script integrates precision over recall with the trapezoid rule:
    ((1 + 1) / 2 + (1/2 + 2/3) / 2) / 2 = 0.7917 (plain AP would be (1 + 2/3) / 2 = 0.8333)."""
    index = pd.DataFrame({"image_id": ["q", "a", "b", "c", "d"], "label": [1, 1, 0, 1, 0]})
    index["query"] = index["image_id"] == "q"
    index["train"] = index["database"] = ~index["query"]
    write_descriptors(tmp_path / "d.parquet", index, np.array([[0.0], [1.0], [2.0], [3.0], [4.0]], np.float32))
    out = outputs(tmp_path)
    evaluate(tmp_path / "d.parquet", out, k=1000, holidays=True, n_timed=1)
    summary = pd.read_parquet(out["summary"]).iloc[0]
    assert summary["holidays_map"] == pytest.approx((1.0 + (0.5 + 2 / 3) / 2) / 2)
    assert summary["map_all"] == pytest.approx((1 + 2 / 3) / 2)


def test_approximate_search_is_timed_with_its_recall(tmp_path):
    from cbir.io import read_descriptors
    from cbir.search import make_index

    path = descriptor_file(tmp_path, binary=True)
    out = outputs(tmp_path)
    evaluate(path, out, k=10, n_timed=5, approximate=True)
    timing = pd.read_parquet(out["timing"])
    assert timing["index"].value_counts().to_dict() == {"exact": 5, "approximate": 5}
    # The recall is the share of each exact top 10 that the approximate search also returns.
    descriptors = read_descriptors(path)
    database, queries = descriptors.subset("database"), descriptors.subset("query")
    exact = make_index(database.values, n_bits=16).search(queries.values, 10)[1]
    approximate = make_index(database.values, n_bits=16, approximate=True).search(queries.values, 10)[1]
    expected = np.mean([len(set(e) & set(a)) / len(e) for e, a in zip(exact, approximate)])
    assert timing.loc[timing["index"] == "approximate", "recall_at_k"].unique().tolist() == [pytest.approx(expected)]


def test_summary_carries_provenance(tmp_path):
    from cbir.io import read_metadata
    from cbir.provenance import provenance

    out = outputs(tmp_path)
    evaluate(descriptor_file(tmp_path, binary=True), out, k=10, n_timed=2, provenance=provenance())
    record = read_metadata(out["summary"])["provenance"]
    assert {"commit", "dirty", "versions", "cpu", "time"} <= set(record)
    assert record["versions"]["numpy"] == np.__version__ and record["cpu"]["model"]


def test_empty_query_set_is_an_error(tmp_path):
    index = pd.DataFrame({"image_id": ["a", "b"], "label": [0, 1], "train": [True, True], "database": [True, True], "query": [False, False]})
    write_descriptors(tmp_path / "d.parquet", index, np.zeros((2, 3), np.float32))
    with pytest.raises(ValueError, match="0 query rows"):
        evaluate(tmp_path / "d.parquet", outputs(tmp_path), k=5)


def test_a_copied_tree_without_git_records_the_commit_it_names(monkeypatch):
    from cbir import provenance as prov

    monkeypatch.setattr(prov, "_git", lambda *args: None)  # as in a copy without .git
    monkeypatch.setenv(prov.COMMIT_VARIABLE, "0123456789abcdef")
    record = prov.provenance()
    assert record["commit"] == "0123456789abcdef" and record["dirty"] is None
    assert "0123456789 (copied tree, unchecked)" in prov.describe(record)
    monkeypatch.delenv(prov.COMMIT_VARIABLE)
    assert prov.provenance()["commit"] is None


def test_the_query_chunk_size_changes_no_number(tmp_path):
    """Queries are scored in chunks (fewer per chunk for a large database): any chunking gives
    the same rankings, per-query metrics and curves, on both ground truths."""
    features = descriptor_file(tmp_path / "f", binary=False)
    codes = descriptor_file(tmp_path / "c", binary=True)
    results = []
    for chunk_size in (None, 5, 1):
        out = outputs(tmp_path / f"chunk{chunk_size}")
        evaluate(codes, out, k=20, n_timed=2, reference_path=features, chunk_size=chunk_size)
        result = {name: pd.read_parquet(out[name]) for name in ("ranking", "per_query", "pr")}
        # per_query lists each chunk's queries under each ground truth in turn: order by its key
        result["per_query"] = result["per_query"].sort_values(["ground_truth", "query_id"]).reset_index(drop=True)
        results.append(result)
    assert set(results[0]["per_query"]["ground_truth"]) == {"labels", "neighbours"}
    for other in results[1:]:
        for name in ("ranking", "per_query", "pr"):
            pd.testing.assert_frame_equal(results[0][name], other[name])


def test_a_method_s_code_lengths_evaluated_together_equal_one_by_one(tmp_path):
    """evaluate_all reads the reference features once for every code file: the same numbers as
    evaluating each file alone."""
    features = descriptor_file(tmp_path / "f", binary=False)
    codes = [descriptor_file(tmp_path / f"c{seed}", binary=True, seed=seed) for seed in (1, 2)]
    together = [outputs(tmp_path / f"together{i}") for i in range(2)]
    evaluate_all(codes, together, 20, reference_path=features, n_neighbours=5, n_timed=2)
    for i, path in enumerate(codes):
        alone = outputs(tmp_path / f"alone{i}")
        evaluate(path, alone, k=20, reference_path=features, n_neighbours=5, n_timed=2)
        for name in ("ranking", "per_query", "pr"):
            pd.testing.assert_frame_equal(pd.read_parquet(together[i][name]), pd.read_parquet(alone[name]))
    with pytest.raises(ValueError, match="2 descriptor files but 1"):
        evaluate_all(codes, together[:1], 20)
