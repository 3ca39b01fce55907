"""The workflow parses, lints, plans every shipped config, and runs the embedded default."""

from __future__ import annotations

import pandas as pd
import pytest
import yaml

from conftest import REPO
from workflow import snakemake


def test_lint_is_clean(tmp_path):
    result = snakemake(tmp_path, "--lint", check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Congratulations" in result.stdout + result.stderr


@pytest.mark.parametrize("configfile", sorted(p.name for p in (REPO / "config").glob("*.yaml")))
def test_shipped_configs_plan(tmp_path, configfile):
    result = snakemake(tmp_path, "-n", "--quiet", "rules", configfile=REPO / "config" / configfile)
    assert "dataset_" in result.stdout


def test_bad_config_stops_before_any_job(tmp_path):
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    config["datasets"]["digits"]["protocl"] = "digits"
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(config))
    result = snakemake(tmp_path, "--cores", "1", configfile=path, check=False)
    assert result.returncode != 0
    assert "config key 'datasets.digits.protocl': unknown key" in result.stderr
    assert not (tmp_path / "resources").exists() and not (tmp_path / "results").exists()


def test_default_run_writes_manifest_splits_and_counts(tmp_path):
    snakemake(tmp_path, "--cores", "2")
    manifest = pd.read_parquet(tmp_path / "resources/datasets/digits/manifest.parquet")
    split = pd.read_parquet(tmp_path / "results/digits/splits/digits.parquet")
    counts = pd.read_csv(tmp_path / "results/digits/splits/digits_counts.tsv", sep="\t")
    assert len(manifest) == 1797
    assert split["database"].sum() == 1200 and split["query"].sum() == 300
    assert counts.set_index("class_name").loc["total", "query"] == 300
    # A second run has nothing to do.
    again = snakemake(tmp_path, "-n", "--cores", "2")
    assert "Nothing to be done" in again.stdout + again.stderr
