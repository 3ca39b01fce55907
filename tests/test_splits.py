"""Split protocols: sizes, per-class counts, disjoint queries, seeded and shuffled."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from cbir.splits import SplitError, class_counts, sample_split


def manifest(train_per_class: int, test_per_class: int, n_classes: int = 10) -> pd.DataFrame:
    rows = []
    for split, per_class in (("train", train_per_class), ("test", test_per_class)):
        for i in range(per_class * n_classes):
            rows.append({"image_id": f"{split}/{i:05d}", "label": i % n_classes, "class_name": str(i % n_classes), "split": split})
    return pd.DataFrame(rows)


PAPER = {"kind": "per_class", "database_per_class": 100, "query_per_class": 10, "train_per_class": "database"}


def per_class(split, role):
    return split[split[role]].groupby("label").size()


def test_paper_protocol_sizes():
    split = sample_split(manifest(150, 30), PAPER, seed=0)
    assert split["database"].sum() == 1000 and split["query"].sum() == 100
    assert (per_class(split, "database") == 100).all() and (per_class(split, "query") == 10).all()
    assert (split["train"] == split["database"]).all()
    assert (split.loc[split["query"], "split"] == "test").all()
    assert (split.loc[split["database"], "split"] == "train").all()


def test_train_on_whole_training_split():
    split = sample_split(manifest(150, 30), {**PAPER, "train_per_class": "all"}, seed=0)
    assert split["train"].sum() == 1500 and split["database"].sum() == 1000
    assert not (split["train"] & split["query"]).any()


def test_full_protocol():
    split = sample_split(manifest(15, 5), {"kind": "per_class", "database_per_class": "all", "query_per_class": "all"}, seed=0)
    assert split["database"].sum() == 150 and split["query"].sum() == 50 and split["train"].sum() == 150


def test_caltech_protocol_without_test_split():
    images = manifest(40, 0, n_classes=5)
    # Class 0 has only 35 images: 30 train, 5 left for queries ("up to 20").
    images = images.drop(images[images["label"] == 0].index[35:])
    protocol = {"kind": "per_class", "train_per_class": 30, "query_per_class": {"up_to": 20}, "database_per_class": "all"}
    split = sample_split(images, protocol, seed=1)
    assert (per_class(split, "train") == 30).all()
    assert per_class(split, "query").to_dict() == {0: 5, 1: 10, 2: 10, 3: 10, 4: 10}
    assert not (split["query"] & (split["train"] | split["database"])).any()
    # The database is every image that is not a query.
    assert split["database"].sum() + split["query"].sum() == len(images)


def test_digits_like_protocol_without_test_split():
    images = manifest(50, 0)
    split = sample_split(images, {"kind": "per_class", "database_per_class": 30, "query_per_class": 10}, seed=0)
    assert (per_class(split, "database") == 30).all() and (per_class(split, "query") == 10).all()
    assert not (split["query"] & split["database"]).any()


def test_holidays_protocol():
    images = pd.DataFrame(
        {
            "image_id": ["100000.jpg", "100001.jpg", "100100.jpg", "100101.jpg", "100102.jpg"],
            "label": [0, 0, 1, 1, 1],
            "class_name": ["1000", "1000", "1001", "1001", "1001"],
            "split": ["test", "train", "test", "train", "train"],
        }
    )
    split = sample_split(images, {"kind": "holidays"}, seed=0)
    assert sorted(split.loc[split["query"], "image_id"]) == ["100000.jpg", "100100.jpg"]
    assert (split["database"] == ~split["query"]).all() and (split["train"] == split["database"]).all()


def test_same_seed_same_split_other_seed_other_split():
    images = manifest(150, 30)
    first, again, other = (sample_split(images, PAPER, seed=s) for s in (3, 3, 4))
    pd.testing.assert_frame_equal(first, again)
    assert set(first.loc[first["database"], "image_id"]) != set(other.loc[other["database"], "image_id"])


def test_independent_of_manifest_order():
    images = manifest(150, 30)
    shuffled = images.sample(frac=1, random_state=0)
    pd.testing.assert_frame_equal(sample_split(images, PAPER, seed=5), sample_split(shuffled, PAPER, seed=5))


def test_database_order_is_shuffled_not_class_sorted():
    split = sample_split(manifest(150, 30), PAPER, seed=0)
    labels = split.loc[split["database"], "label"].to_numpy()
    # A class-sorted database would change label only 9 times.
    assert np.count_nonzero(np.diff(labels)) > 500


def test_class_counts_table():
    split = sample_split(manifest(150, 30), PAPER, seed=0)
    counts = class_counts(split)
    assert counts.iloc[-1][["train", "database", "query"]].tolist() == [1000, 1000, 100]
    assert (counts.iloc[:-1]["query"] == 10).all()


def test_unknown_protocol_kind():
    with pytest.raises(ValueError, match="protocol kind"):
        sample_split(manifest(5, 5), {"kind": "magic"}, seed=0)


@pytest.mark.parametrize(
    ("protocol", "key", "detail"),
    [
        ({**PAPER, "database_per_class": 200}, "protocols.paper.database_per_class", "200 images per class asked for, but class '0' has only 150 training-split images"),
        ({**PAPER, "query_per_class": 31}, "protocols.paper.query_per_class", "31 images per class asked for, but class '0' has only 30 test-split images"),
        ({**PAPER, "train_per_class": 151}, "protocols.paper.train_per_class", "151 images per class asked for"),
    ],
)
def test_sizes_beyond_a_class_name_the_key_and_the_class(protocol, key, detail):
    with pytest.raises(SplitError, match=re.escape(f"{key}: {detail}")):
        sample_split(manifest(150, 30), protocol, seed=0, name="paper")


def test_a_database_that_takes_every_image_leaves_no_queries_and_says_so():
    """Without a test split, queries come from what training and the database leave."""
    protocol = {"kind": "per_class", "database_per_class": 50, "query_per_class": 10}
    with pytest.raises(SplitError, match=re.escape("protocols.digits.query_per_class: 10 images per class asked for, but class '0' has only 0 images left")):
        sample_split(manifest(50, 0), protocol, seed=0, name="digits")
    with pytest.raises(SplitError, match=re.escape("protocols.digits.query_per_class: the protocol leaves no query images")):
        sample_split(manifest(50, 0), {**protocol, "query_per_class": "all"}, seed=0, name="digits")
