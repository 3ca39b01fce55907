"""`cbir search`: new images against a built index, for every model type."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from cbir.cli import main
from cbir.config import load_config
from cbir.datasets import load_image
from conftest import REPO

MODELS = ["hashing/smallcnn/ba/48", "hashing/smallcnn/itq/12", "hashing/smallcnn/cca_itq/24", "hashing/smallcnn/ssdh/32", "metric/smallcnn/TN-FT", "metric/smallcnn/PT", "features/smallcnn/finetuned/penultimate"]


def image_file(run, image_id, tmp_path) -> str:
    """A digits image of the run, saved losslessly as a PNG file."""
    manifest = pd.read_parquet(run / "resources/datasets/digits/manifest.parquet").set_index("image_id")
    pixels = np.load(run / "resources/datasets/digits/pixels.npy")[manifest.loc[image_id, "index"]]
    path = tmp_path / f"{image_id.replace('/', '_')}.png"
    Image.fromarray(pixels[..., 0]).save(path)
    return str(path)


def split(run):
    return pd.read_parquet(run / "results/digits/seed0/splits/digits.parquet")


def search(run, monkeypatch, *args):
    monkeypatch.chdir(run)
    return main(["--configfile", str(REPO / "config.yaml"), "search", *args])


def search_one(run, monkeypatch, tmp_path, image_id, model, k, output) -> pd.DataFrame:
    """The top ``k`` of one database or query image of the run, through ``--output``."""
    out = tmp_path / output
    assert search(run, monkeypatch, image_file(run, image_id, tmp_path), "--model", model, "-k", str(k), "--output", str(out)) == 0
    return pd.read_parquet(out) if out.suffix == ".parquet" else pd.read_csv(out)


@pytest.mark.parametrize("model", MODELS)
def test_database_image_finds_itself_at_distance_zero(default_run, tmp_path, monkeypatch, model):
    image_id = split(default_run).query("database")["image_id"].iloc[7]
    hits = search_one(default_run, monkeypatch, tmp_path, image_id, model, 20, "hits.csv")
    assert hits["distance"].iloc[0] == pytest.approx(0, abs=1e-4)
    # Equal codes tie at distance 0, ordered by database position; float descriptors rank it first.
    assert image_id in set(hits.loc[hits["distance"] <= 1e-4, "image_id"])
    if not model.startswith("hashing/"):
        assert hits["image_id"].iloc[0] == image_id


@pytest.mark.parametrize("model", MODELS)
def test_results_equal_the_evaluation_ranking(default_run, tmp_path, monkeypatch, model):
    query_id = split(default_run).query("query")["image_id"].iloc[3]
    hits = search_one(default_run, monkeypatch, tmp_path, query_id, model, 10, "hits.parquet")
    ranking = pd.read_parquet(default_run / f"results/digits/seed0/evaluation/{model}/ranking.parquet")
    expected = ranking[ranking["query_id"] == query_id].sort_values("rank").head(10)
    if model.startswith("hashing/"):
        # The query's code from one image may differ from the pipeline's (a batch) where a
        # projection is within float rounding of the threshold: rare, and one bit at most.
        from cbir.io import read_descriptors
        from cbir.query import SearchEngine
        from cbir.search import pairwise_hamming

        monkeypatch.chdir(default_run)
        config = load_config(REPO / "config.yaml")
        ours = SearchEngine(config, "digits", model).embed([load_image(image_file(default_run, query_id, tmp_path))])
        codes = read_descriptors(default_run / f"results/digits/seed0/{model}/descriptors.parquet")
        pipeline = codes.values[codes.image_id == query_id]
        flipped = int(pairwise_hamming(ours, pipeline, codes.n_bits)[0, 0])
        assert flipped <= 1
        if flipped == 0:  # integer distances: the same list, ties in the same order
            assert hits["image_id"].tolist() == expected["image_id"].tolist()
            assert hits["distance"].tolist() == expected["distance"].tolist()
        return
    # Float descriptors of one image and of a batch differ in the last bits; items closer than
    # that may swap (the random-weight PT model of digits is nearly all such ties).
    tolerance = 1e-5
    np.testing.assert_allclose(hits["distance"], expected["distance"], atol=tolerance)
    cutoff = expected["distance"].iloc[-1] - tolerance
    assert set(hits.loc[hits["distance"] < cutoff, "image_id"]) == set(expected.loc[expected["distance"] < cutoff, "image_id"])
    if np.diff(expected["distance"]).min() > tolerance:
        assert hits["image_id"].tolist() == expected["image_id"].tolist()


def test_corrupt_and_missing_files_are_reported_and_skipped(default_run, tmp_path, monkeypatch, capsys):
    good = image_file(default_run, split(default_run)["image_id"].iloc[0], tmp_path)
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"\xff\xd8\xff not a jpeg")
    notes = tmp_path / "notes.txt"
    notes.write_text("hello")
    sheet = tmp_path / "sheet.png"
    code = search(default_run, monkeypatch, str(corrupt), good, str(notes), str(tmp_path / "gone.png"), "-k", "5", "--sheet", str(sheet))
    captured = capsys.readouterr()
    assert code == 0
    assert "skipped" in captured.err and "corrupt.jpg" in captured.err and "notes.txt" in captured.err and "gone.png" in captured.err
    assert "1 of 4 queries searched" in captured.err
    assert captured.out.count(good) == 5  # five results for the one good query
    assert sheet.read_bytes()[:4] == b"\x89PNG"


def test_only_unreadable_files_fail(default_run, tmp_path, monkeypatch, capsys):
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"garbage")
    assert search(default_run, monkeypatch, str(corrupt)) == 1


def test_missing_index_names_what_is_missing(tmp_path, monkeypatch, capsys):
    image = tmp_path / "q.png"
    Image.new("L", (8, 8)).save(image)
    monkeypatch.chdir(tmp_path)  # a directory where the pipeline never ran
    assert main(["--configfile", str(REPO / "config.yaml"), "search", str(image), "--model", "hashing/smallcnn/ba/48"]) == 2
    err = capsys.readouterr().err
    assert "missing results/digits/seed0/backbones/smallcnn/model.pt" in err and "snakemake" in err


def test_unknown_model_lists_the_choices(default_run, tmp_path, monkeypatch, capsys):
    image = tmp_path / "q.png"
    Image.new("L", (8, 8)).save(image)
    assert search(default_run, monkeypatch, str(image), "--model", "hashing/smallcnn/ba/16") == 2
    err = capsys.readouterr().err
    assert "not a model of dataset 'digits'" in err and "hashing/smallcnn/ba/48" in err


def test_models_lists_what_is_built(default_run, monkeypatch, capsys):
    monkeypatch.chdir(default_run)
    assert main(["--configfile", str(REPO / "config.yaml"), "models"]) == 0
    lines = capsys.readouterr().out.splitlines()
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    n_hashing = len(config["hashing"]["methods"]) * len(config["hashing"]["bits"])
    assert "digits\thashing/smallcnn/ba/48\tbuilt (seeds 0, 1)" in lines and len(lines) == 1 + n_hashing + 8


def test_unknown_dataset_is_named_before_anything_runs(default_run, tmp_path, monkeypatch, capsys):
    image = tmp_path / "q.png"
    Image.new("L", (8, 8)).save(image)
    assert search(default_run, monkeypatch, str(image), "--dataset", "nope") == 2
    assert "unknown dataset 'nope'; the config defines digits" in capsys.readouterr().err


def test_output_is_checked_before_searching_and_never_overwritten_silently(default_run, tmp_path, monkeypatch, capsys):
    query = image_file(default_run, split(default_run)["image_id"].iloc[0], tmp_path)
    assert search(default_run, monkeypatch, query, "-o", str(tmp_path / "no" / "such" / "dir.csv")) == 2
    assert "no directory" in capsys.readouterr().err
    existing = tmp_path / "hits.csv"
    existing.write_text("keep me")
    assert search(default_run, monkeypatch, query, "-o", str(existing)) == 2
    assert "pass --force" in capsys.readouterr().err and existing.read_text() == "keep me"
    assert search(default_run, monkeypatch, query, "-o", str(existing), "--force", "-k", "3") == 0
    assert len(pd.read_csv(existing)) == 3


def test_paths_are_relative_to_the_callers_directory(default_run, tmp_path, monkeypatch):
    query = image_file(default_run, split(default_run)["image_id"].iloc[0], tmp_path)
    monkeypatch.chdir(tmp_path)
    argv = ["--directory", str(default_run), "--configfile", str(REPO / "config.yaml"), "search", Path(query).name, "-k", "2", "-o", "out.csv"]
    assert main(argv) == 0
    assert len(pd.read_csv(tmp_path / "out.csv")) == 2 and not (default_run / "out.csv").exists()


def test_each_seed_has_its_own_index(default_run, tmp_path, monkeypatch):
    query = image_file(default_run, split(default_run).query("query")["image_id"].iloc[0], tmp_path)
    hits = {}
    for seed in (0, 1):
        out = tmp_path / f"seed{seed}.csv"
        assert search(default_run, monkeypatch, query, "--seed", str(seed), "--model", "metric/smallcnn/TN-FT", "-k", "5", "-o", str(out)) == 0
        hits[seed] = pd.read_csv(out)["distance"].tolist()
    assert hits[0] != hits[1]
    assert search(default_run, monkeypatch, query, "--seed", "9") == 2


@pytest.mark.parametrize("order", ["before", "after", "directory before, config after"])
def test_common_options_go_before_or_after_the_command(tmp_path, order):
    config = tmp_path / "elsewhere.yaml"
    config.write_text((REPO / "config.yaml").read_text().replace("report_dir: results/report/default", "report_dir: results/report/elsewhere"))
    report = tmp_path / "results/report/elsewhere"
    report.mkdir(parents=True)
    for name in ("results.tsv", "provenance.json"):
        (report / name).write_bytes((REPO / "resources/results/default" / name).read_bytes())
    options = {"-d": str(tmp_path), "--configfile": str(config)}
    before = {"before": options, "after": {}, "directory before, config after": {"-d": str(tmp_path)}}[order]
    after = {k: v for k, v in options.items() if k not in before}
    argv = [*sum(before.items(), ()), "publish", *sum(after.items(), ()), "--to", str(tmp_path / "published")]
    assert main(argv) == 0
    # The named config's report was published under its name, from the named directory.
    assert (tmp_path / "published/elsewhere/results.tsv").read_bytes() == (report / "results.tsv").read_bytes()
