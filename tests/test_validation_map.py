"""benchmarks/validation_map.py: held-out training images ranked against the database."""

from __future__ import annotations

import importlib.util

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
