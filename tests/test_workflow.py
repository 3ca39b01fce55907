"""The workflow parses, lints and plans every shipped config; the embedded default runs end to
end, and its report tables hold the numbers of the evaluation files."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import yaml

from cbir.report import read_results
from conftest import REPO, make_mnist
from workflow import snakemake

REPORT = "results/report/default"


def test_lint_is_clean(tmp_path):
    result = snakemake(tmp_path, "--lint", check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Congratulations" in result.stdout + result.stderr


@pytest.mark.parametrize("configfile", sorted(p.name for p in (REPO / "config").glob("*.yaml")))
def test_shipped_configs_plan(tmp_path, configfile):
    config = yaml.safe_load((REPO / "config" / configfile).read_text())
    for name, dataset in config["datasets"].items():
        if dataset.get("root"):  # local copies that are not here: tiny stand-ins of the format
            dataset["root"] = str(make_mnist(tmp_path / name, folder=""))
    path = tmp_path / configfile
    path.write_text(yaml.safe_dump(config))
    result = snakemake(tmp_path, "-n", "--quiet", "rules", configfile=path)
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


SEEDS = yaml.safe_load((REPO / "config.yaml").read_text())["seeds"]


def test_default_run_writes_manifest_splits_and_counts(default_run):
    manifest = pd.read_parquet(default_run / "resources/datasets/digits/manifest.parquet")
    assert len(manifest) == 1797
    splits = []
    for seed in SEEDS:
        split = pd.read_parquet(default_run / f"results/digits/seed{seed}/splits/digits.parquet")
        counts = pd.read_csv(default_run / f"results/digits/seed{seed}/splits/digits_counts.tsv", sep="\t", comment="#")
        assert split["database"].sum() == 1200 and split["query"].sum() == 300
        assert counts.set_index("class_name").loc["total", "query"] == 300
        splits.append(set(split.loc[split["query"], "image_id"]))
    assert len(SEEDS) >= 2 and splits[0] != splits[1]  # each seed samples its own split


REPORT_FILES = [
    "metrics.parquet",
    "results.tsv",
    "provenance.json",
    "table1_ba_map.tsv",
    "table1_ba_map.md",
    "table2_hashing_methods.tsv",
    "table2_hashing_methods.md",
    "table_metric_learning.tsv",
    "table_metric_learning.md",
    "table_retrieval_time.tsv",
    "table_retrieval_time.md",
    "fig4_finetune_accuracy.png",
    "fig5_ba_objective.png",
    "fig6_precision_recall.png",
    "fig7_top10_digits.png",
    "fig8_metric_precision.png",
    "fig9_metric_map.png",
    "explorer_digits.html",
]


@pytest.mark.parametrize("name", REPORT_FILES)
def test_report_file_exists_and_is_not_empty(default_run, name):
    path = default_run / REPORT / name
    assert path.is_file() and path.stat().st_size > 100
    if name.endswith(".png"):
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def summaries(run, descriptor) -> pd.DataFrame:
    """The evaluation summaries of ``descriptor``, one row per seed and ground truth."""
    frames = [pd.read_parquet(run / f"results/digits/seed{seed}/evaluation/{descriptor}/summary.parquet").assign(seed=seed) for seed in SEEDS]
    return pd.concat(frames, ignore_index=True)


def results(run) -> pd.DataFrame:
    return read_results(run / REPORT / "results.tsv")


@pytest.mark.parametrize("descriptor", ["hashing/smallcnn/ba/48", "hashing/smallcnn/cca_itq/12", "metric/smallcnn/TN-FT", "features/smallcnn/finetuned/penultimate"])
def test_results_are_the_mean_and_sd_over_seeds_of_the_evaluation_files(default_run, descriptor):
    table = results(default_run)
    pipeline, backbone, method, *bits = descriptor.split("/")
    method = "euclidean" if pipeline == "features" else method
    same_bits = (table["bits"] == int(bits[0])).fillna(False) if pipeline == "hashing" else table["bits"].isna()
    rows = table[(table["pipeline"] == pipeline) & (table["method"] == method) & same_bits]
    evaluated = summaries(default_run, descriptor)
    assert set(rows["ground_truth"]) - {"-"} == set(evaluated["ground_truth"])
    for ground_truth, group in evaluated.groupby("ground_truth"):
        for metric in ("map", "tie_aware_map", "p@10", "tie_aware_p@K"):
            row = rows[(rows["ground_truth"] == ground_truth) & (rows["metric"] == metric)].iloc[0]
            values = 100 * group.sort_values("seed")[metric].to_numpy()
            assert row["n"] == len(SEEDS)
            assert row["mean"] == pytest.approx(values.mean()) and row["sd"] == pytest.approx(values.std(ddof=1))
            assert [float(v) for v in row["values"].split(";")] == pytest.approx(values, rel=1e-5)


def test_both_ground_truths_for_hash_codes_labels_only_otherwise(default_run):
    table = results(default_run)
    gts = table[table["ground_truth"] != "-"].groupby("pipeline")["ground_truth"].agg(set).to_dict()
    assert gts == {"hashing": {"labels", "neighbours"}, "metric": {"labels"}, "features": {"labels"}}


def test_table2_shows_every_method_with_spread_for_both_ground_truths(default_run):
    text = (default_run / REPORT / "table2_hashing_methods.md").read_text()
    assert "Ground truth: class labels" in text and "Ground truth: Euclidean neighbours" in text
    for method in ("BA", "ITQ", "CCA-ITQ", "SSDH"):
        assert text.count(f"| digits | {method} | smallcnn |") == 2
    rows = [line for line in text.splitlines() if line.startswith("| digits |")]
    assert rows and all(line.count("±") == 4 for line in rows)
    assert "quoted" not in text.split("Provenance")[0].replace("Rows marked quoted", "")  # digits is no paper's dataset
    assert "Provenance: seeds 0, 1; commit" in text


def test_metric_learning_table_is_the_mean_over_seeds(default_run):
    text = (default_run / REPORT / "table_metric_learning.md").read_text()
    for model in ["PT", "FT", "SN-PT", "SN-PT-FT", "SN-FT", "TN-PT", "TN-PT-FT", "TN-FT"]:
        line = next(line for line in text.splitlines() if line.startswith(f"| digits | smallcnn | {model} |"))
        mean = 100 * summaries(default_run, f"metric/smallcnn/{model}")["map_all"].mean()
        assert line.split("|")[5].strip().startswith(f"{mean:.2f} ± ")


def test_training_beats_the_random_pretrained_head(default_run):
    table = results(default_run)
    mean = table[(table["pipeline"] == "metric") & (table["metric"] == "map_all")].set_index("method")["mean"]
    for model in ("FT", "SN-PT", "TN-PT", "SN-FT", "TN-FT"):
        assert mean[model] > mean["PT"] + 10, model


def test_provenance_of_the_report(default_run):
    record = json.loads((default_run / REPORT / "provenance.json").read_text())
    assert record["seeds"] == SEEDS and len(record["config_sha256"]) == 64
    assert {"torch", "numpy", "faiss-cpu", "snakemake"} <= set(record["versions"]) and record["cpu"]["model"]
    assert record["evaluated_by"]["cpus"] and record["evaluated_by"]["first"] <= record["evaluated_by"]["last"]
    assert (default_run / REPORT / "results.tsv").read_text().startswith("# provenance: seeds 0, 1; commit")


def test_rerun_has_nothing_to_do(default_run):
    again = snakemake(default_run, "-n", "--cores", "2")
    assert "Nothing to be done" in again.stdout + again.stderr


def test_html_report(default_run):
    snakemake(default_run, "--report", "report.html")
    html = (default_run / "report.html").read_text(errors="replace")
    assert len(html) > 100_000 and "table1_ba_map.tsv" in html and "fig5_ba_objective.png" in html and "provenance.json" in html
    assert "explorer_digits.html" in html  # the retrieval explorer, embedded
