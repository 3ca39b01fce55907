"""benchmarks/validation_map.py: held-out training images ranked against the database."""

from __future__ import annotations

import importlib.util
import re

import numpy as np
import pandas as pd
import pytest

from conftest import REPO
from cbir.codes import pack_bits
from cbir.io import write_descriptors

spec = importlib.util.spec_from_file_location("validation_map", REPO / "benchmarks" / "validation_map.py")
validation_map = importlib.util.module_from_spec(spec)
spec.loader.exec_module(validation_map)


def write_codes(path, labels: np.ndarray, bits: np.ndarray, database_is_train: bool) -> None:
    n = len(labels)
    index = pd.DataFrame({"image_id": [f"i{i}" for i in range(n)], "label": labels, "train": True, "database": True if database_is_train else np.arange(n) // 4 % 2 == 0, "query": False})
    write_descriptors(path, index, pack_bits(bits), n_bits=bits.shape[1])


@pytest.mark.parametrize("database_is_train", [True, False])
def test_codes_of_the_class_give_full_marks(tmp_path, database_is_train):
    labels = np.arange(400) % 4
    class_codes = np.random.default_rng(0).integers(0, 2, (4, 16)).astype(bool)
    write_codes(tmp_path / "codes.parquet", labels, class_codes[labels], database_is_train)
    result = validation_map.validation_map(tmp_path / "codes.parquet", fraction=0.1, seed=3, k=50)
    assert result == {"queries": 40, "val_map": 100.0, "failed": 0}


def test_a_held_out_database_image_does_not_find_itself(tmp_path):
    # Every image its own code, labels unrelated to the codes: a query that found itself would have
    # a relevant first hit (mAP@1 100%); without itself, mAP@1 is near chance (25%, four classes).
    n = 400
    labels = np.random.default_rng(1).integers(0, 4, n)
    codes = np.unpackbits(np.arange(n, dtype=">u2").view(np.uint8).reshape(n, 2), axis=1).astype(bool)
    write_codes(tmp_path / "codes.parquet", labels, codes, database_is_train=True)
    result = validation_map.validation_map(tmp_path / "codes.parquet", fraction=0.1, seed=0, k=1)
    assert result["queries"] == 40
    assert result["val_map"] < 45


def test_features_are_refused(tmp_path):
    index = pd.DataFrame({"image_id": ["a", "b"], "label": [0, 1], "train": True, "database": True, "query": False})
    write_descriptors(tmp_path / "features.parquet", index, np.ones((2, 3)))
    with pytest.raises(ValueError, match="features, not binary codes"):
        validation_map.validation_map(tmp_path / "features.parquet", fraction=0.5, seed=0, k=2)


def test_a_row_per_code_file_of_the_default_run(default_run, capsys):
    # The default protocol's database is its training set: every held-out image is a database image.
    validation_map.main(["--configfile", str(REPO / "config.yaml"), "--results", str(default_run / "results"), "--methods", "ssdh", "itq"])
    lines = capsys.readouterr().out.splitlines()
    rows = [line.split() for line in lines[1 : lines.index("")]]
    assert [(r[2], int(r[3]), int(r[4])) for r in rows] == [(m, b, s) for m in ("ssdh", "itq") for b in (12, 24, 32, 48) for s in (0, 1)]
    assert all(0 < float(r[6]) <= 100 for r in rows)
    assert "validation mAP@1000 (%), mean ± sd over seeds [0, 1]" in lines


def test_neighbours_of_a_held_out_image_leave_it_out(tmp_path):
    """Codes that are the features' signs: validation precision@K on the features' Euclidean
    neighbours, without each query finding itself, grows with the code length; against
    themselves (the codes' own space) it is full marks."""
    from cbir.evaluation import reference_space

    rng = np.random.default_rng(2)
    n = 400
    features = rng.normal(size=(n, 32)).astype(np.float32)
    index = pd.DataFrame({"image_id": [f"i{i}" for i in range(n)], "label": np.arange(n) % 4, "train": True, "database": True, "query": False})
    write_descriptors(tmp_path / "features.parquet", index, features)
    reference = reference_space(tmp_path / "features.parquet", "none")
    scores = {}
    for bits in (4, 32):
        write_descriptors(tmp_path / f"codes{bits}.parquet", index, pack_bits(features[:, :bits] > 0), n_bits=bits)
        scores[bits] = validation_map.validation_map(tmp_path / f"codes{bits}.parquet", 0.1, 0, 50, reference, n_neighbours=10)["val_p@K"]
    assert 0 < scores[4] < scores[32] < 100
    binary = (features > 0).astype(np.float32)
    write_descriptors(tmp_path / "binary.parquet", index, binary)
    result = validation_map.validation_map(tmp_path / "codes32.parquet", 0.1, 0, 50, reference_space(tmp_path / "binary.parquet", "none"), n_neighbours=10)
    assert result["val_p@K"] == pytest.approx(100.0)


def test_head_only_recipes_are_scored_on_the_held_out_images(default_run, capsys, monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))  # it imports validation_map as the scripts do
    spec = importlib.util.spec_from_file_location("deephash_head_search", REPO / "benchmarks" / "deephash_head_search.py")
    search = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(search)
    recipes = ['{"epochs": 2}', '{"epochs": 2, "options": {"eta": 1.0}}']
    search.main(["--configfile", str(REPO / "config.yaml"), "--results", str(default_run / "results"), "--methods", "dpsh", "--bits", "12", "--seeds", "0", "1", "--recipes", *recipes])
    lines = capsys.readouterr().out.splitlines()
    scores = [float(m.group(1)) for line in lines if (m := re.search(r"val mAP +([\d.]+) +fit", line))]
    assert len(scores) == 4 and all(0 < s <= 100 for s in scores)
    assert "validation mAP@1000 (%), mean ± sd over seeds" in lines


def test_end_to_end_recipes_retrain_exactly_as_the_workflow(default_run, capsys, monkeypatch):
    """The unchanged recipe trains SSDH again as the run's train_deep_hash_joint did (one thread,
    both): its codes score on the held-out images exactly what the run's own codes score."""
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    spec = importlib.util.spec_from_file_location("deephash_e2e_search", REPO / "benchmarks" / "deephash_e2e_search.py")
    search = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(search)
    search.main(["--configfile", str(REPO / "config.yaml"), "--results", str(default_run / "results"), "--methods", "ssdh", "--seeds", "0", "--recipes", "{}"])
    lines = capsys.readouterr().out.splitlines()
    scores = {int(m.group(1)): float(m.group(2)) for line in lines if (m := re.search(r"\{\} +(\d+) +0 +val mAP +([\d.]+)", line))}
    assert sorted(scores) == [12, 24, 32, 48]
    for bits, score in scores.items():
        published = validation_map.validation_map(default_run / f"results/digits/seed0/hashing/smallcnn/ssdh/{bits}/descriptors.parquet", 0.1, 0, 1000)
        assert score == pytest.approx(published["val_map"], abs=0.006)  # printed to two decimals


def test_siamese_triplet_recipes_are_scored_on_the_held_out_images(default_run, capsys, monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    spec = importlib.util.spec_from_file_location("metric_learning_search", REPO / "benchmarks" / "metric_learning_search.py")
    search = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(search)
    search.main(["--configfile", str(REPO / "config.yaml"), "--results", str(default_run / "results"), "--seeds", "0", "--recipes", "{}", '{"epochs": 1}'])
    lines = capsys.readouterr().out.splitlines()
    scores = {(m.group(1), m.group(2)): float(m.group(3)) for line in lines if (m := re.search(r"^digits +(\S+) +(\{.*?\}) +0 +val mAP +([\d.]+)", line))}
    models = ("PT", "FT", "SN-PT", "SN-PT-FT", "SN-FT", "TN-PT", "TN-PT-FT", "TN-FT")
    assert sorted(scores) == sorted((model, recipe) for model in models for recipe in ("{}", '{"epochs": 1}'))
    assert all(0 < s <= 100 for s in scores.values())
    assert scores["PT", "{}"] == scores["PT", '{"epochs": 1}']  # PT is the pretrained FC8, not trained
    assert scores["FT", "{}"] > scores["PT", "{}"] + 10  # a classifier trained on the labels ranks by class
    assert "validation mAP@1000 (%), mean ± sd over seeds" in lines
