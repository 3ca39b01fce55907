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
SEEDS = BASE["seeds"]
N_METHODS = len(BASE["hashing"]["methods"])
# Every hashing method trains all its code lengths in one job: a deep hashing method in its own
# rules (end to end on one trunk, or head only), every other method in train_hash.
HASH_RULE = {"ssdh": "train_deep_hash_joint", "ssdh_head": "train_deep_hash_head"}


def hashing_jobs(seeds: int) -> dict[str, int]:
    """The training jobs planned when every hashing method is trained again for ``seeds`` repeats:
    one job per method and seed, whatever the number of code lengths."""
    jobs: dict[str, int] = {}
    for method in BASE["hashing"]["methods"]:
        rule = HASH_RULE.get(method, "train_hash")
        jobs[rule] = jobs.get(rule, 0) + seeds
    return jobs


def planned(run, tmp_path, change) -> dict[str, int]:
    """The jobs ``snakemake -n`` plans in the finished default run after ``change(config)``."""
    config = yaml.safe_load(yaml.safe_dump(BASE))
    change(config)
    path = tmp_path / "changed.yaml"
    path.write_text(yaml.safe_dump(config))
    return job_counts(snakemake(run, "-n", "--cores", "2", configfile=path).stdout)


def test_nothing_changed_nothing_planned(default_run, tmp_path):
    assert planned(default_run, tmp_path, lambda c: None) == {}


def test_new_bit_length_reruns_hashing_evaluation_and_report(default_run, tmp_path):
    """A new length trains each method again (a method's lengths train in one job, its process
    started once) and evaluates each method's codes again (a method's lengths are evaluated in one job)."""
    jobs = planned(default_run, tmp_path, lambda c: c["hashing"]["bits"].append(16))
    runs = len(BASE["hashing"]["methods"]) * len(SEEDS)
    assert jobs == {**hashing_jobs(len(SEEDS)), "evaluate_codes": runs, "report": 1, "explorer": 1, "all": 1}


def test_hashing_option_reruns_only_that_method(default_run, tmp_path):
    jobs = planned(default_run, tmp_path, lambda c: c["hashing"].setdefault("ba", {}).update(max_iter=7))
    assert jobs == {"train_hash": len(SEEDS), "evaluate_codes": len(SEEDS), "report": 1, "explorer": 1, "all": 1}


def test_a_variant_adds_its_own_jobs_only(default_run, tmp_path):
    def add_variant(config):
        config["hashing"]["variants"] = {"ba_pca": {"method": "ba", "init": "pca"}}
        config["hashing"]["methods"].append("ba_pca")

    jobs = planned(default_run, tmp_path, add_variant)
    assert jobs == {"train_hash": len(SEEDS), "evaluate_codes": len(SEEDS), "report": 1, "explorer": 1, "all": 1}


def test_one_method_s_training_sample_reruns_that_method_only(default_run, tmp_path):
    jobs = planned(default_run, tmp_path, lambda c: c["hashing"].update(train_sample={"ba": 600}))
    assert jobs == {"train_hash": len(SEEDS), "evaluate_codes": len(SEEDS), "report": 1, "explorer": 1, "all": 1}


def test_backbone_change_reruns_its_training_and_what_follows_only(default_run, tmp_path):
    jobs = planned(default_run, tmp_path, lambda c: c["backbones"]["smallcnn"]["finetune"].update(epochs=3))
    n = len(SEEDS)
    # The fine-tuned features and everything built on them; the pretrained features, and the
    # siamese/triplet models trained on those, are untouched.
    assert jobs == {"finetune": n, "extract_features": n, **hashing_jobs(n), "evaluate_codes": N_METHODS * n, "evaluate_features": n, "report": 1, "explorer": 1, "all": 1}


def test_another_seed_runs_only_that_repeat(default_run, tmp_path):
    jobs = planned(default_run, tmp_path, lambda c: c.update(seeds=[*SEEDS, 7]))
    assert jobs == {
        "sample_split": 1, "finetune": 1, "extract_features": 2, "train_metric_models": 1,
        **hashing_jobs(1), "evaluate_codes": N_METHODS, "evaluate_features": 1, "evaluate_metric_models": 1, "report": 1, "all": 1,
    }


def test_interrupted_job_is_rerun_and_resumes(tmp_path):
    config = yaml.safe_load(yaml.safe_dump(BASE))
    config["seeds"] = [0]
    config["backbones"]["smallcnn"]["finetune"]["epochs"] = 6
    path = tmp_path / "long.yaml"
    path.write_text(yaml.safe_dump(config))
    model = "results/digits/seed0/backbones/smallcnn/model.pt"
    command = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(tmp_path), "--configfile", str(path), "--cores", "2", model]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    resume = tmp_path / (model + ".resume")
    deadline = time.monotonic() + 300
    while not resume.exists() and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.05)
    assert resume.exists(), "fine-tuning never wrote its first checkpoint"
    os.killpg(process.pid, signal.SIGKILL)  # snakemake and its job, mid-training
    process.wait()
    assert not (tmp_path / model).exists()  # no partial output under the final name

    snakemake(tmp_path, "--unlock", configfile=path)
    plan = job_counts(snakemake(tmp_path, "-n", "--cores", "2", model, configfile=path).stdout)
    assert plan.get("finetune") == 1
    snakemake(tmp_path, "--cores", "2", "--rerun-incomplete", model, configfile=path)
    log = (tmp_path / "results/logs/digits/seed0/finetune/smallcnn.log").read_text()
    assert "resumed from" in log
    history = pd.read_parquet(tmp_path / "results/digits/seed0/backbones/smallcnn/history.parquet")
    assert history["epoch"].tolist() == list(range(1, 7))
    assert not resume.exists()


def start(workdir, configfile) -> subprocess.Popen:
    command = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(workdir), "--configfile", str(configfile), "--cores", "2", "--rerun-incomplete"]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)


def kill_when(process, condition, what: str) -> None:
    """SIGKILL snakemake and its jobs as soon as ``condition()`` holds."""
    deadline = time.monotonic() + 300
    while not condition() and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.02)
    assert condition(), f"the run never reached {what}"
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def unlock(workdir, configfile) -> None:
    """What snakemake asks for after a killed run: its own lock files removed."""
    snakemake(workdir, "--unlock", configfile=configfile)


def test_a_run_killed_mid_training_and_mid_hashing_ends_with_the_numbers_of_an_uninterrupted_one(default_run, tmp_path):
    """Seed 0 of the default config, killed while fine-tuning and again while hashing, then
    finished: its codes and every evaluation equal the uninterrupted default run's, bit for bit."""
    config = yaml.safe_load(yaml.safe_dump(BASE))
    config["seeds"] = [0]
    path = tmp_path / "seed0.yaml"
    path.write_text(yaml.safe_dump(config))
    run = tmp_path / "results/digits/seed0"
    hashing = run / "hashing/smallcnn"

    kill_when(start(tmp_path, path), lambda: (run / "backbones/smallcnn/model.pt.resume").exists(), "fine-tuning's first checkpoint")
    assert not (run / "backbones/smallcnn/model.pt").exists()
    unlock(tmp_path, path)

    longest = BASE["hashing"]["bits"][-1]  # a train_hash job fits its lengths in the config's order

    def hashing_in_flight():
        # train_hash's logs, one per method (SSDH's are in a folder of their own)
        logs = (tmp_path / "results/logs/digits/seed0/hashing/smallcnn").glob("*.log")
        return [log for log in logs if not (hashing / log.stem / str(longest) / "model.npz").exists()]

    kill_when(start(tmp_path, path), hashing_in_flight, "a hashing job")
    killed = hashing_in_flight()
    assert killed and not any((hashing / log.stem / str(longest) / "descriptors.parquet").exists() for log in killed)
    unlock(tmp_path, path)

    process = start(tmp_path, path)
    assert process.wait() == 0
    compared = 0
    clock = ["seconds", "images_per_second"]  # how long things took differs, nothing else may
    for ours in sorted(run.glob("**/*.parquet")):
        relative = ours.relative_to(tmp_path)
        if relative.parts[3] in ("backbones", "hashing", "features", "metric", "evaluation") and "timing" not in ours.name:
            frames = [pd.read_parquet(p).drop(columns=clock, errors="ignore") for p in (ours, default_run / relative)]
            pd.testing.assert_frame_equal(*frames, check_exact=True, obj=str(relative))
            compared += 1
    assert compared > 100


def test_a_new_photo_reruns_its_dataset_only(tmp_path):
    """The folder's listing is a parameter of its dataset rule: adding an image reruns that
    dataset (and, by the DAG, what is built on it), not another dataset's."""
    from conftest import save_image

    for name in ("a", "b"):
        for cls in ("cats", "dogs"):
            for i in range(3):
                save_image(tmp_path / name / cls / f"{i}.png", "RGB", seed=i)
    dataset = {"kind": "imagefolder", "protocol": "p", "hashing": ["smallcnn"], "metric_learning": []}
    config = {
        "seeds": [0],
        "datasets": {name: {**dataset, "root": str(tmp_path / name)} for name in ("a", "b")},
        "protocols": {"p": {"kind": "per_class", "database_per_class": 2, "query_per_class": 1, "train_per_class": "database"}},
        "backbones": BASE["backbones"],
    }
    path = tmp_path / "folders.yaml"
    path.write_text(yaml.safe_dump(config))
    manifests = ["resources/datasets/a/manifest.parquet", "resources/datasets/b/manifest.parquet"]
    snakemake(tmp_path, "--cores", "1", *manifests, configfile=path)
    assert job_counts(snakemake(tmp_path, "-n", "--cores", "1", *manifests, configfile=path).stdout) == {}

    save_image(tmp_path / "a" / "cats" / "new.png", "RGB", seed=7)
    assert job_counts(snakemake(tmp_path, "-n", "--cores", "1", *manifests, configfile=path).stdout) == {"dataset_a": 1}
