"""The retrieval and evaluation stages on small descriptor files."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cbir.codes import pack_bits
from cbir.evaluation import evaluate, retrieve
from cbir.io import write_descriptors
from cbir.metrics import average_precision_at_k, score_ap_from_ranks_1


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


@pytest.mark.parametrize("binary", [True, False])
def test_ranking_and_metrics_agree(tmp_path, binary):
    path = descriptor_file(tmp_path, binary)
    ranking = retrieve(path, tmp_path / "r.parquet", tmp_path / "t.parquet", k=1000, n_timed=5)
    assert len(ranking) == 12 * 60 and ranking.groupby("query_id")["rank"].max().eq(60).all()
    evaluate(path, tmp_path / "q.parquet", tmp_path / "s.parquet", tmp_path / "pr.parquet", k=1000)
    per_query = pd.read_parquet(tmp_path / "q.parquet").set_index("query_id")
    for query, hits in ranking.groupby("query_id"):
        rel = hits.sort_values("rank")["relevant"].to_numpy()[None]
        # The evaluation's AP uses the same ranking (ties by database position) as the search.
        assert per_query.loc[query, "ap"] == pytest.approx(average_precision_at_k(rel, 1000)[0])
        assert per_query.loc[query, "p@10"] == pytest.approx(rel[0, :10].mean())
    summary = pd.read_parquet(tmp_path / "s.parquet").iloc[0]
    assert summary["n_queries"] == 12 and summary["n_database"] == 60 and summary["k"] == 60
    assert summary["map"] == pytest.approx(per_query["ap"].mean())
    curves = pd.read_parquet(tmp_path / "pr.parquet")
    assert set(curves["curve"]) == ({"top-k", "hamming-radius"} if binary else {"top-k"})


def test_holidays_ap_is_the_official_one(tmp_path):
    path = descriptor_file(tmp_path, binary=False)
    ranking = retrieve(path, tmp_path / "r.parquet", tmp_path / "t.parquet", k=1000, n_timed=5)
    evaluate(path, tmp_path / "q.parquet", tmp_path / "s.parquet", tmp_path / "pr.parquet", k=1000, holidays=True)
    per_query = pd.read_parquet(tmp_path / "q.parquet").set_index("query_id")
    for query, hits in ranking.groupby("query_id"):
        rel = hits.sort_values("rank")["relevant"].to_numpy()
        assert per_query.loc[query, "holidays_ap"] == pytest.approx(score_ap_from_ranks_1(np.flatnonzero(rel), rel.sum()))
    assert "holidays_map" in pd.read_parquet(tmp_path / "s.parquet")


def test_approximate_search_is_timed_with_its_recall(tmp_path):
    path = descriptor_file(tmp_path, binary=True)
    retrieve(path, tmp_path / "r.parquet", tmp_path / "t.parquet", k=10, n_timed=5, approximate=True)
    timing = pd.read_parquet(tmp_path / "t.parquet")
    assert timing["index"].value_counts().to_dict() == {"exact": 5, "approximate": 5}
    recall = timing.loc[timing["index"] == "approximate", "recall_at_k"]
    assert recall.nunique() == 1 and 0 <= recall.iloc[0] <= 1


def test_empty_query_set_is_an_error(tmp_path):
    index = pd.DataFrame({"image_id": ["a", "b"], "label": [0, 1], "train": [True, True], "database": [True, True], "query": [False, False]})
    write_descriptors(tmp_path / "d.parquet", index, np.zeros((2, 3), np.float32))
    with pytest.raises(ValueError, match="0 query rows"):
        retrieve(tmp_path / "d.parquet", tmp_path / "r.parquet", tmp_path / "t.parquet", k=5)
