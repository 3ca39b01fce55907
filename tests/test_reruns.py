"""Reruns: a config change reruns exactly the stages that depend on it; an interrupted job is
rerun (resuming its checkpoint) and never taken as complete."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pandas as pd
import yaml

from conftest import REPO
from workflow import job_counts, snakemake

BASE = yaml.safe_load((REPO / "config.yaml").read_text())
REPORT_RULES = {"collect_metrics", "hashing_tables", "metric_learning_table", "timing_table", "figure_pr", "figure_ba_objective", "figure_metric_learning", "all"}


def planned(run, tmp_path, change) -> dict[str, int]:
    """The jobs ``snakemake -n`` plans in the finished default run after ``change(config)``."""
    config = yaml.safe_load(yaml.safe_dump(BASE))
    change(config)
    path = tmp_path / "changed.yaml"
    path.write_text(yaml.safe_dump(config))
    return job_counts(snakemake(run, "-n", "--cores", "2", configfile=path).stdout)


def test_nothing_changed_nothing_planned(default_run, tmp_path):
    assert planned(default_run, tmp_path, lambda c: None) == {}


def test_new_bit_length_reruns_hashing_retrieval_evaluation_and_report(default_run, tmp_path):
    jobs = planned(default_run, tmp_path, lambda c: c["hashing"]["bits"].append(16))
    n_methods = len(BASE["hashing"]["methods"])
    assert {rule: jobs.pop(rule) for rule in ("train_hash", "retrieve", "evaluate")} == {"train_hash": n_methods, "retrieve": n_methods, "evaluate": n_methods}
    assert set(jobs) == REPORT_RULES and set(jobs.values()) == {1}


def test_backbone_change_reruns_its_training_and_what_follows_only(default_run, tmp_path):
    jobs = planned(default_run, tmp_path, lambda c: c["backbones"]["smallcnn"]["finetune"].update(epochs=3))
    n_hashing = len(BASE["hashing"]["methods"]) * len(BASE["hashing"]["bits"])
    # The fine-tuned features and everything built on them; the pretrained features, and the
    # siamese/triplet models trained on those, are untouched.
    assert jobs.pop("finetune") == 1 and jobs.pop("extract_features") == 1
    assert jobs.pop("train_hash") == n_hashing
    assert jobs.pop("retrieve") == n_hashing + 1 and jobs.pop("evaluate") == n_hashing + 1
    assert "train_metric_model" not in jobs and "sample_split" not in jobs and "dataset_digits" not in jobs
    assert set(jobs) <= REPORT_RULES | {"figure_finetune", "figure_top10"}


def test_seed_change_reruns_from_the_splits_on(default_run, tmp_path):
    jobs = planned(default_run, tmp_path, lambda c: c.update(seed=1))
    assert "dataset_digits" not in jobs
    assert jobs["sample_split"] == 1 and jobs["finetune"] == 1 and jobs["extract_features"] == 2
    assert jobs["train_metric_model"] == 8 and jobs["train_hash"] == len(BASE["hashing"]["methods"]) * len(BASE["hashing"]["bits"])


def test_interrupted_job_is_rerun_and_resumes(tmp_path):
    config = yaml.safe_load(yaml.safe_dump(BASE))
    config["backbones"]["smallcnn"]["finetune"]["epochs"] = 40
    path = tmp_path / "long.yaml"
    path.write_text(yaml.safe_dump(config))
    model = "results/digits/backbones/smallcnn/model.pt"
    command = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(tmp_path), "--configfile", str(path), "--cores", "2", model]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    resume = tmp_path / (model + ".resume")
    deadline = time.monotonic() + 300
    while not resume.exists() and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.5)
    assert resume.exists(), "fine-tuning never wrote its first checkpoint"
    os.killpg(process.pid, signal.SIGKILL)  # snakemake and its job, mid-training
    process.wait()
    assert not (tmp_path / model).exists()  # no partial output under the final name

    snakemake(tmp_path, "--unlock", configfile=path)
    plan = job_counts(snakemake(tmp_path, "-n", "--cores", "2", model, configfile=path).stdout)
    assert plan.get("finetune") == 1
    snakemake(tmp_path, "--cores", "2", "--rerun-incomplete", model, configfile=path)
    log = (tmp_path / "logs/digits/finetune/smallcnn.log").read_text()
    assert "resumed from" in log
    history = pd.read_parquet(tmp_path / "results/digits/backbones/smallcnn/history.parquet")
    assert history["epoch"].tolist() == list(range(1, 41))
    assert not resume.exists()
