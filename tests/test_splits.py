"""Split protocols: sizes, per-class counts, disjoint queries, seeded and shuffled."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest
import yaml
from jsonschema import Draft202012Validator

from cbir.config import ConfigError, load_schema, validate_config
from cbir.splits import PRESETS, SplitError, class_counts, sample_split

from conftest import REPO


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


# The presets: CIFAR-10's shape, 5,000 training-split and 1,000 test-split images in each of 10 classes.
CIFAR = manifest(5000, 1000)


def ids(split, role):
    return set(split.loc[split[role], "image_id"])


@pytest.mark.parametrize(
    ("preset", "train", "database", "query"),
    [("cifar10", 5000, 54000, 1000), ("cifar10-1", 5000, 59000, 1000), ("cifar10-2", 50000, 50000, 10000), ("first-paper", 10000, 10000, 1000)],
)
def test_preset_sizes_per_class_and_in_total(preset, train, database, query):
    split = sample_split(CIFAR, PRESETS[preset], seed=0, name=preset)
    for role, total in (("train", train), ("database", database), ("query", query)):
        assert split[role].sum() == total and (per_class(split, role) == total // 10).all(), role
    assert not ids(split, "query") & (ids(split, "database") | ids(split, "train"))


def test_deephash_presets_relate_train_and_database_as_defined():
    everything = set(CIFAR["image_id"])
    # cifar10: training images apart from the database, which is all the rest.
    split = sample_split(CIFAR, PRESETS["cifar10"], seed=0)
    assert not ids(split, "train") & ids(split, "database")
    assert ids(split, "train") | ids(split, "database") | ids(split, "query") == everything
    # cifar10-1: the database is every non-query image; training images are sampled from it.
    split = sample_split(CIFAR, PRESETS["cifar10-1"], seed=0)
    assert ids(split, "train") < ids(split, "database") and ids(split, "database") | ids(split, "query") == everything
    # cifar10-2: training set = database; with the queries, every image.
    split = sample_split(CIFAR, PRESETS["cifar10-2"], seed=0)
    assert ids(split, "train") == ids(split, "database") and ids(split, "database") | ids(split, "query") == everything


@pytest.mark.parametrize("preset", ["cifar10", "cifar10-1", "cifar10-2"])
def test_deephash_presets_pool_the_train_and_test_splits(preset):
    split = sample_split(CIFAR, PRESETS[preset], seed=0)
    for role in ("train", "database", "query"):
        assert set(split.loc[split[role], "split"]) == {"train", "test"}, role


def test_first_paper_preset_queries_test_images_only():
    split = sample_split(CIFAR, PRESETS["first-paper"], seed=0)
    assert (split.loc[split["query"], "split"] == "test").all() and (split.loc[split["database"], "split"] == "train").all()


def test_a_preset_is_seeded():
    first, again, other = (sample_split(CIFAR, PRESETS["cifar10-1"], seed=s) for s in (7, 7, 8))
    pd.testing.assert_frame_equal(first, again)
    assert ids(first, "query") != ids(other, "query") and ids(first, "train") != ids(other, "train")


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_presets_are_written_in_the_protocol_vocabulary_users_have(preset):
    schema = load_schema()
    protocol_schema = {**schema["properties"]["protocols"]["additionalProperties"], "$defs": schema["$defs"]}
    assert not list(Draft202012Validator(protocol_schema).iter_errors(PRESETS[preset]))


def test_rest_is_every_training_split_image_left_when_queries_are_test_images():
    protocol = {"kind": "per_class", "query_per_class": 10, "train_per_class": 100, "database_per_class": "rest"}
    split = sample_split(manifest(150, 30), protocol, seed=0)
    assert (per_class(split, "train") == 100).all() and (per_class(split, "database") == 50).all() and (per_class(split, "query") == 10).all()
    assert not ids(split, "train") & ids(split, "database")


def preset_config(protocol: str, **protocols) -> dict:
    """The default config on a dataset named cifar, its hashing section left at the defaults, with no `protocols` but these."""
    config = {key: value for key, value in yaml.safe_load((REPO / "config.yaml").read_text()).items() if key not in ("hashing", "protocols")}
    return {**config, "datasets": {"cifar": {"kind": "cifar10", "protocol": protocol, "hashing": ["smallcnn"]}}, **({"protocols": protocols} if protocols else {})}


def test_a_dataset_names_a_preset_without_defining_it():
    config = validate_config(preset_config("cifar10-1"))
    assert config["protocols"] == {"cifar10-1": PRESETS["cifar10-1"]}
    assert validate_config(config) == config  # a validated config validates again, preset and all


def test_a_protocol_may_not_take_a_preset_s_name():
    with pytest.raises(ConfigError, match=re.escape("config key 'protocols.cifar10': 'cifar10' is a preset")):
        validate_config(preset_config("cifar10", cifar10={"kind": "per_class", "query_per_class": 1, "database_per_class": "all"}))


def test_rest_needs_a_number_of_training_images():
    mine = {"kind": "per_class", "query_per_class": 1, "database_per_class": "rest"}
    with pytest.raises(ConfigError, match=re.escape("config key 'protocols.mine.train_per_class': database_per_class `rest`")):
        validate_config(preset_config("mine", mine=mine))


def test_a_preset_asking_a_dataset_for_more_images_than_it_has_names_dataset_and_preset(tmp_path, monkeypatch):
    """cifar10-2 takes 6,000 images per class; a dataset with fewer stops the run before any job."""
    monkeypatch.chdir(tmp_path)
    small = manifest(5000, 500).assign(path="", index=0)
    path = tmp_path / "resources" / "datasets" / "cifar" / "manifest.parquet"
    path.parent.mkdir(parents=True)
    small.to_parquet(path)
    detail = "preset 'cifar10-2', query_per_class: 1000 images per class asked for, but class '0' has only 500 images left"
    with pytest.raises(ConfigError, match=re.escape(f"config key 'datasets.cifar.protocol': {detail}") + ".*dataset cifar"):
        validate_config(preset_config("cifar10-2"))
