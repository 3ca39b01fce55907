"""A damaged or tampered index: every `cbir` command fails with one line naming the file, exit
status 2, no traceback; an index never opens files outside the collection it indexes."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from cbir.cli import main

from conftest import REPO

SEED0 = "results/digits/seed0"


@pytest.fixture
def run(default_run, tmp_path):
    """The default run's index, hard-linked into a scratch folder (files are replaced, never
    written in place, so the shared run stays intact)."""
    copy = tmp_path / "run"
    shutil.copytree(default_run / "resources", copy / "resources", copy_function=os.link)
    shutil.copytree(default_run / SEED0, copy / SEED0, copy_function=os.link)
    shutil.copytree(default_run / "results/report", copy / "results/report", copy_function=os.link)
    return copy


def replace(path, data: bytes) -> None:
    path.unlink()
    path.write_bytes(data)


def query_image(tmp_path):
    path = tmp_path / "q.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (8, 8), dtype=np.uint8)).save(path)
    return str(path)


def cbir(run, monkeypatch, capsys, *args) -> tuple[int, str]:
    monkeypatch.chdir(run)
    status = main(["--configfile", str(REPO / "config.yaml"), *args])
    return status, capsys.readouterr().err


def features_as_variable_lists(run):
    path = run / SEED0 / "features/smallcnn/finetuned/penultimate.parquet"
    table = pq.read_table(path)
    lists = pa.array([row[: 3 + i % 2] for i, row in enumerate(table.column("feature").to_pylist())], pa.list_(pa.float32()))
    path.unlink()
    pq.write_table(table.set_column(table.schema.get_field_index("feature"), "feature", lists), path)
    return "features/smallcnn/finetuned/penultimate", path


def codes_of_another_length(run):
    path = run / SEED0 / "hashing/smallcnn/itq/12/descriptors.parquet"
    table = pq.read_table(path)
    path.unlink()
    pq.write_table(table.replace_schema_metadata({b"cbir.n_bits": b"99"}), path)
    return "hashing/smallcnn/itq/12", path


def hash_arrays_of_the_wrong_shape(run):
    path = run / SEED0 / "hashing/smallcnn/itq/24/model.npz"
    with np.load(path) as loaded:
        arrays = {name: loaded[name][:3] if loaded[name].ndim else loaded[name] for name in loaded.files}
    path.unlink()
    np.savez(path, **arrays)
    return "hashing/smallcnn/itq/24", path


def bogus_model_parameters(run):
    path = run / SEED0 / "hashing/smallcnn/ba/48/model.json"
    meta = json.loads(path.read_text())
    meta["params"]["n_bits"] = "many"
    replace(path, json.dumps(meta).encode())
    return "hashing/smallcnn/ba/48", path


def unknown_model_parameter(run):
    path = run / SEED0 / "hashing/smallcnn/ba/32/model.json"
    meta = json.loads(path.read_text())
    meta["params"]["open_sesame"] = 1
    replace(path, json.dumps(meta).encode())
    return "hashing/smallcnn/ba/32", path


def model_json_not_utf8(run):
    path = run / SEED0 / "hashing/smallcnn/ba/24/model.json"
    replace(path, b"\xff\xfe{not json")
    return "hashing/smallcnn/ba/24", path


def broken_network_file(run):
    path = run / SEED0 / "hashing/smallcnn/ssdh/32/model.pt"
    replace(path, path.read_bytes()[:1000])
    return "hashing/smallcnn/ssdh/32", path


def network_with_absurd_sizes(run):
    path = run / SEED0 / "hashing/smallcnn/ssdh/12/model.pt"
    saved = torch.load(path, weights_only=True)
    saved["n_bits"] = 10**9
    path.unlink()
    torch.save(saved, path)
    return "hashing/smallcnn/ssdh/12", path


def backbone_not_a_state_dict(run):
    path = run / SEED0 / "backbones/smallcnn/model.pt"
    path.unlink()
    torch.save([1, 2, 3], path)
    return "hashing/smallcnn/itq/48", path


def manifest_pointing_outside(run):
    path = run / "resources/datasets/digits/manifest.parquet"
    table = pq.read_table(path)
    paths = table.column("path").to_pylist()
    paths[:5] = ["/etc/passwd"] * 5
    path.unlink()
    pq.write_table(table.set_column(table.schema.get_field_index("path"), "path", pa.array(paths)), path)
    return "hashing/smallcnn/ba/48", path


DAMAGE = {
    "variable-length feature lists": features_as_variable_lists,
    "codes of another length than they say": codes_of_another_length,
    "hash model arrays of the wrong shape": hash_arrays_of_the_wrong_shape,
    "hash model parameter of the wrong type": bogus_model_parameters,
    "hash model parameter that does not exist": unknown_model_parameter,
    "hash model metadata not UTF-8": model_json_not_utf8,
    "network file cut short": broken_network_file,
    "network file with absurd sizes": network_with_absurd_sizes,
    "backbone file that holds no weights": backbone_not_a_state_dict,
    "manifest naming a file outside the collection": manifest_pointing_outside,
}


@pytest.mark.parametrize("case", sorted(DAMAGE), ids=sorted(DAMAGE))
def test_search_on_a_damaged_index_fails_in_one_line_naming_the_file(run, tmp_path, monkeypatch, capsys, case):
    model, damaged = DAMAGE[case](run)
    status, err = cbir(run, monkeypatch, capsys, "search", query_image(tmp_path), "--model", model, "--sheet", str(tmp_path / "sheet.png"))
    assert status == 2
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert damaged.name in err and str(damaged.relative_to(run)).split("/")[0] in err, err
    assert not (tmp_path / "sheet.png").exists()


def test_a_manifest_escaping_the_collection_is_named_with_the_path(run, tmp_path, monkeypatch, capsys):
    model, _ = manifest_pointing_outside(run)
    status, err = cbir(run, monkeypatch, capsys, "search", query_image(tmp_path), "--model", model, "--sheet", str(tmp_path / "sheet.png"))
    assert status == 2 and "outside the indexed collection" in err and "/etc/passwd" in err


def test_provenance_that_is_not_utf8_is_a_warning_naming_it(run, tmp_path, monkeypatch, capsys):
    replace(run / "results/report/default/provenance.json", b"\xff\xfe garbage")
    status, err = cbir(run, monkeypatch, capsys, "search", query_image(tmp_path), "--model", "hashing/smallcnn/itq/12")
    assert status == 0 and "warning" in err and "provenance.json" in err


@pytest.mark.parametrize("damage", [b"\xff\xfe not text", b"dataset\tvalue\n1\t2\n", b""], ids=["not UTF-8", "other columns", "empty"])
def test_compare_on_a_damaged_results_table_fails_in_one_line(run, monkeypatch, capsys, damage):
    theirs = run / "results/report/default/results.tsv"
    replace(theirs, damage)
    status, err = cbir(run, monkeypatch, capsys, "compare", str(theirs), str(REPO / "resources/results/default"))
    assert status == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1 and "results.tsv" in err, err


def test_publish_of_an_unfinished_run_fails_in_one_line(tmp_path, monkeypatch, capsys):
    status, err = cbir(tmp_path, monkeypatch, capsys, "publish", "--to", str(tmp_path / "published"))
    assert status == 2 and "results.tsv" in err and "run the workflow to the end first" in err
    assert not (tmp_path / "published").exists()


def test_debug_shows_the_traceback(run, tmp_path, monkeypatch, capsys):
    model, _ = broken_network_file(run)
    monkeypatch.chdir(run)
    with pytest.raises(ValueError, match="model.pt"):
        main(["--configfile", str(REPO / "config.yaml"), "search", query_image(tmp_path), "--model", model, "--debug"])
