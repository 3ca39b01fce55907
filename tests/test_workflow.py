"""The workflow parses, lints and plans every shipped config; the embedded default runs end to
end, and its report tables hold the numbers of the evaluation files."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import yaml

from conftest import REPO
from workflow import snakemake

REPORT = "results/report/default"


def test_lint_is_clean(tmp_path):
    result = snakemake(tmp_path, "--lint", check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Congratulations" in result.stdout + result.stderr


@pytest.mark.parametrize("configfile", sorted(p.name for p in (REPO / "config").glob("*.yaml")))
def test_shipped_configs_plan(tmp_path, configfile):
    result = snakemake(tmp_path, "-n", "--quiet", "rules", configfile=REPO / "config" / configfile)
    assert "dataset_" in result.stdout and "evaluate" in result.stdout


def test_bad_config_stops_before_any_job(tmp_path):
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    config["datasets"]["digits"]["protocl"] = "digits"
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(config))
    result = snakemake(tmp_path, "--cores", "1", configfile=path, check=False)
    assert result.returncode != 0
    assert "config key 'datasets.digits.protocl': unknown key" in result.stderr
    assert not (tmp_path / "resources").exists() and not (tmp_path / "results").exists()


def test_default_run_writes_manifest_splits_and_counts(default_run):
    manifest = pd.read_parquet(default_run / "resources/datasets/digits/manifest.parquet")
    split = pd.read_parquet(default_run / "results/digits/splits/digits.parquet")
    counts = pd.read_csv(default_run / "results/digits/splits/digits_counts.tsv", sep="\t")
    assert len(manifest) == 1797
    assert split["database"].sum() == 1200 and split["query"].sum() == 300
    assert counts.set_index("class_name").loc["total", "query"] == 300


REPORT_FILES = [
    "metrics.csv",
    "table1_ba_map.csv",
    "table1_ba_map.md",
    "table2_hashing_methods.csv",
    "table2_hashing_methods.md",
    "table_metric_learning.csv",
    "table_metric_learning.md",
    "table_retrieval_time.csv",
    "table_retrieval_time.md",
    "fig4_finetune_accuracy.png",
    "fig5_ba_objective.png",
    "fig6_precision_recall.png",
    "fig7_top10_digits.png",
    "fig8_metric_precision.png",
    "fig9_metric_map.png",
]


@pytest.mark.parametrize("name", REPORT_FILES)
def test_report_file_exists_and_is_not_empty(default_run, name):
    path = default_run / REPORT / name
    assert path.is_file() and path.stat().st_size > 100
    if name.endswith(".png"):
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def summary(run, descriptor):
    return pd.read_parquet(run / f"results/digits/evaluation/{descriptor}/summary.parquet").iloc[0]


def test_table1_equals_evaluation_files(default_run):
    table = pd.read_csv(default_run / REPORT / "table1_ba_map.csv")
    assert sorted(table["bits"]) == [12, 24, 32, 48]
    for row in table.itertuples():
        expected = summary(default_run, f"hashing/smallcnn/ba/{row.bits}")
        assert row.map == pytest.approx(100 * expected["map"])
        assert row.tie_aware_map == pytest.approx(100 * expected["tie_aware_map"])


def test_table2_equals_evaluation_files(default_run):
    table = pd.read_csv(default_run / REPORT / "table2_hashing_methods.csv")
    measured = table[(table["source"] == "measured") & (table["method"] != "Euclidean (no hashing)")]
    assert set(measured["method"]) == {"BA", "ITQ", "PCAH", "LSH", "SH"} and len(measured) == 20
    names = {"BA": "ba", "ITQ": "itq", "PCAH": "pcah", "LSH": "lsh", "SH": "sh"}
    for row in measured.itertuples():
        assert row.map == pytest.approx(100 * summary(default_run, f"hashing/smallcnn/{names[row.method]}/{row.bits}")["map"])
    euclidean = table[table["method"] == "Euclidean (no hashing)"]
    assert euclidean["map"].nunique() == 1
    assert euclidean["map"].iloc[0] == pytest.approx(100 * summary(default_run, "features/smallcnn/finetuned/penultimate")["map"])
    # digits is none of the papers' datasets: nothing is quoted for it.
    assert (table["source"] == "quoted").sum() == 0


def test_metric_learning_table_equals_evaluation_files(default_run):
    table = pd.read_csv(default_run / REPORT / "table_metric_learning.csv")
    assert table["model"].tolist() == ["PT", "FT", "SN-PT", "SN-PT-FT", "SN-FT", "TN-PT", "TN-PT-FT", "TN-FT"]
    for _, row in table.iterrows():
        expected = summary(default_run, f"metric/smallcnn/{row['model']}")
        assert row["map_all"] == pytest.approx(100 * expected["map_all"])
        assert row["p@10"] == pytest.approx(100 * expected["p@10"])
    timing = pd.read_parquet(default_run / "results/digits/retrieval/metric/smallcnn/TN-FT/timing.parquet")
    assert set(timing["index"]) == {"exact"}  # no approximate search unless asked for
    assert table.loc[table["model"] == "TN-FT", "time_median_ms"].item() == pytest.approx(1e3 * np.median(timing["seconds"]))


def test_training_beats_the_random_pretrained_head(default_run):
    table = pd.read_csv(default_run / REPORT / "table_metric_learning.csv").set_index("model")
    for model in ("FT", "SN-PT", "TN-PT", "SN-FT", "TN-FT"):
        assert table.loc[model, "map_all"] > table.loc["PT", "map_all"] + 10, model


def test_rerun_has_nothing_to_do(default_run):
    again = snakemake(default_run, "-n", "--cores", "2")
    assert "Nothing to be done" in again.stdout + again.stderr


def test_html_report(default_run):
    snakemake(default_run, "--report", "report.html")
    html = (default_run / "report.html").read_text(errors="replace")
    assert len(html) > 100_000 and "table1_ba_map.csv" in html and "fig5_ba_objective.png" in html
