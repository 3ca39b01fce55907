"""Bad configs, as users make them: each is refused before any job, with a message naming the key
or the file, and nothing is written to the results."""

from __future__ import annotations

import copy
import re
import subprocess
import sys
import time

import pytest
import yaml

from cbir.config import ConfigError, load_config, validate_config

from conftest import REPO
from workflow import job_counts, snakemake

BASE = yaml.safe_load((REPO / "config.yaml").read_text())


def setting(path: str, value):
    def mutate(config):
        *parents, last = path.split(".")
        node = config
        for key in parents:
            node = node.setdefault(key, {})
        node[last] = value

    return mutate


def deleting(path: str):
    def mutate(config):
        *parents, last = path.split(".")
        node = config
        for key in parents:
            node = node[key]
        del node[last]

    return mutate


def making_file(name: str, then):
    """A file ``name`` in the working directory, then the change ``then``."""

    def mutate(config):
        with open(name, "w") as handle:
            handle.write("not a folder\n")
        then(config)

    return mutate


# case -> (change to config.yaml, the key the message must name)
BAD = {
    "misspelt top-level key": (setting("sede", [0]), "sede"),
    "a single seed of earlier versions": (setting("seed", 0), "seed"),
    "seeds not a list": (setting("seeds", "zero"), "seeds"),
    "negative seed": (setting("seeds", [0, -1]), "seeds.1"),
    "seed beyond what seeding takes": (setting("seeds", [2**32]), "seeds.0"),
    "seed far beyond": (setting("seeds", [10**20]), "seeds.0"),
    "seed a float": (setting("seeds", [1e20]), "seeds.0"),
    "repeated seed": (setting("seeds", [1, 1]), "seeds"),
    "no seeds": (setting("seeds", []), "seeds"),
    "empty results_dir": (setting("results_dir", ""), "results_dir"),
    "report_dir at the root": (setting("report_dir", "/"), "report_dir"),
    "results_dir an existing file": (making_file("taken", setting("results_dir", "taken")), "results_dir"),
    "report_dir inside a file": (making_file("taken", setting("report_dir", "taken/report")), "report_dir"),
    "no datasets": (setting("datasets", {}), "datasets"),
    "unknown dataset kind": (setting("datasets.digits.kind", "imagenet"), "datasets.digits.kind"),
    "missing protocol": (deleting("datasets.digits.protocol"), "datasets.digits.protocol"),
    "undefined protocol": (setting("datasets.digits.protocol", "paper-mnist"), "datasets.digits.protocol"),
    "undefined hashing backbone": (setting("datasets.digits.hashing", ["resnet50"]), "datasets.digits.hashing"),
    "undefined metric backbone": (setting("datasets.digits.metric_learning", ["alexnet"]), "datasets.digits.metric_learning"),
    "neither hashing nor metric learning": (setting("datasets.digits", {"kind": "digits", "protocol": "digits"}), "datasets.digits"),
    "local copy that does not exist": (setting("datasets.digits.root", "/no/such/folder"), "datasets.digits.root"),
    "local copy that is a file": (making_file("digits.npz", setting("datasets.digits.root", "digits.npz")), "datasets.digits.root"),
    "image folder without a root": (setting("datasets.digits.kind", "imagefolder"), "datasets.digits.root"),
    "unsafe dataset name": (lambda c: c["datasets"].update({"my data/set": c["datasets"]["digits"]}), "datasets"),
    "misspelt dataset key": (setting("datasets.digits.protocl", "digits"), "datasets.digits.protocl"),
    "shard size zero": (setting("datasets.digits.shard_size", 0), "datasets.digits.shard_size"),
    "zero queries per class": (setting("protocols.digits.query_per_class", 0), "protocols.digits.query_per_class"),
    "database size a word": (setting("protocols.digits.database_per_class", "most"), "protocols.digits.database_per_class"),
    "unknown size form": (setting("protocols.digits.query_per_class", {"at_most": 3}), "protocols.digits.query_per_class"),
    "option of another protocol kind": (setting("protocols.digits", {"kind": "holidays", "query_per_class": 5}), "protocols.digits.query_per_class"),
    "holidays protocol on digits": (setting("protocols.digits", {"kind": "holidays"}), "datasets.digits.protocol"),
    "unknown arch": (setting("backbones.smallcnn.arch", "vgg16"), "backbones.smallcnn.arch"),
    "imagenet weights for the small CNN": (setting("backbones.smallcnn.weights", "imagenet"), "backbones.smallcnn.weights"),
    "weights file that is not there": (setting("backbones.smallcnn.weights", "mine/model.pt"), "backbones.smallcnn.weights"),
    "fc6 outside alexnet": (setting("backbones.smallcnn.feature_layer", "fc6"), "backbones.smallcnn.feature_layer"),
    "input size too small": (setting("backbones.smallcnn.input_size", 2), "backbones.smallcnn.input_size"),
    "zero threads": (setting("backbones.smallcnn.threads", 0), "backbones.smallcnn.threads"),
    "zero width": (setting("backbones.smallcnn.width", 0), "backbones.smallcnn.width"),
    "a width for a torchvision arch": (lambda c: c["backbones"]["smallcnn"].update({"arch": "resnet18", "width": 32}), "backbones.smallcnn.width"),
    "non-positive learning rate": (setting("backbones.smallcnn.finetune.lr", 0), "backbones.smallcnn.finetune.lr"),
    "negative epochs": (setting("backbones.smallcnn.finetune.epochs", -1), "backbones.smallcnn.finetune.epochs"),
    "unknown schedule": (setting("backbones.smallcnn.finetune.schedule", "linear"), "backbones.smallcnn.finetune.schedule"),
    "unknown device": (setting("backbones.smallcnn.finetune.device", "tpu"), "backbones.smallcnn.finetune.device"),
    "validation fraction above a half": (setting("backbones.smallcnn.finetune.validation_fraction", 0.9), "backbones.smallcnn.finetune.validation_fraction"),
    "misspelt finetune key": (setting("backbones.smallcnn.finetune.lrate", 0.1), "backbones.smallcnn.finetune.lrate"),
    "bits above 64": (setting("hashing.bits", [12, 128]), "hashing.bits.1"),
    "duplicate bit lengths": (setting("hashing.bits", [12, 12]), "hashing.bits"),
    "unknown hashing method": (setting("hashing.methods", ["ba", "kmeans"]), "hashing.methods.1"),
    "unknown preprocessing": (setting("hashing.preprocess", "zscore"), "hashing.preprocess"),
    "zero training sample": (setting("hashing.train_sample", 0), "hashing.train_sample"),
    "training sample of an unknown method": (setting("hashing.train_sample", {"kmeans": 500}), "hashing.train_sample"),
    "training sample of a method not a number": (setting("hashing.train_sample", {"ba": "half"}), "hashing.train_sample"),
    "misspelt BA option": (setting("hashing.ba.mu_scedule", [1.0]), "hashing.ba.mu_scedule"),
    "unknown BA start": (setting("hashing.ba.init", "zeros"), "hashing.ba.init"),
    "variant of a method without options": (setting("hashing.variants", {"itq2": {"method": "itq"}}), "hashing.variants.itq2.method"),
    "variant with a misspelt option": (setting("hashing.variants", {"ba_pca": {"method": "ba", "intit": "pca"}}), "hashing.variants.ba_pca"),
    "variant with an option of another method": (setting("hashing.variants", {"ba_reg": {"method": "ba", "reg": 0.1}}), "hashing.variants.ba_reg"),
    "variant named like a built-in method": (setting("hashing.variants", {"itq": {"method": "ba"}}), "hashing.variants.itq"),
    "variant without its method": (setting("hashing.variants", {"ba_pca": {"init": "pca"}}), "hashing.variants.ba_pca"),
    "BA mu schedule without count": (setting("hashing.ba.mu_schedule", {"start": 1e-5, "factor": 2}), "hashing.ba.mu_schedule"),
    "BA exact Z step above 20 bits": (setting("hashing.ba.exact_max_bits", 32), "hashing.ba.exact_max_bits"),
    "negative SSDH weight": (setting("hashing.ssdh.alpha", -1), "hashing.ssdh.alpha"),
    "SSDH joint not a boolean": (setting("hashing.ssdh.joint", "yes please"), "hashing.ssdh.joint"),
    "SSDH recipe key that fine-tuning lacks": (setting("hashing.ssdh.finetune", {"epocs": 2}), "hashing.ssdh.finetune.epocs"),
    "SSDH recipe: negative epochs": (setting("hashing.ssdh.finetune.epochs", -5), "hashing.ssdh.finetune.epochs"),
    "SSDH recipe: learning rate a word": (setting("hashing.ssdh.finetune.lr", "x"), "hashing.ssdh.finetune.lr"),
    "SSDH recipe: unknown device": (setting("hashing.ssdh.finetune.device", "banana"), "hashing.ssdh.finetune.device"),
    "SSDH recipe: batch of zero": (setting("hashing.ssdh.finetune.batch_size", 0), "hashing.ssdh.finetune.batch_size"),
    "SSDH head: zero epochs": (setting("hashing.ssdh.head_only.epochs", 0), "hashing.ssdh.head_only.epochs"),
    "unknown metric-learning model": (setting("metric_learning.models", ["PT", "XX"]), "metric_learning.models.1"),
    "zero metric-learning batch": (setting("metric_learning.batch_size", 0), "metric_learning.batch_size"),
    "negative margin": (setting("metric_learning.triplet_margin", -0.1), "metric_learning.triplet_margin"),
    "top-k of zero": (setting("evaluation.topk", 0), "evaluation.topk"),
    "zero neighbours": (setting("evaluation.neighbours", 0), "evaluation.neighbours"),
    "approximate search not a boolean": (setting("evaluation.approximate_hamming", "fast"), "evaluation.approximate_hamming"),
}


@pytest.mark.parametrize("case", sorted(BAD), ids=sorted(BAD))
def test_bad_config_names_the_key(case, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # relative paths of a config are relative to the workflow's directory
    mutate, key = BAD[case]
    config = copy.deepcopy(BASE)
    mutate(config)
    with pytest.raises(ConfigError, match=rf"config key '{re.escape(key)}"):
        validate_config(config)


def test_all_problems_reported_at_once():
    config = copy.deepcopy(BASE)
    config["seeds"] = "x"
    config["evaluation"]["topk"] = 0
    with pytest.raises(ConfigError) as info:
        validate_config(config)
    assert "'seeds'" in str(info.value) and "'evaluation.topk'" in str(info.value)


@pytest.mark.parametrize(
    "text, message",
    [
        (None, "not found"),
        ("datasets: [unclosed\n", "not valid YAML"),
        ("- a list\n- of things\n", "holds a list, not a mapping"),
        ("just words\n", "holds a str, not a mapping"),
        ("seeds: [0]\nseeds: [1]\n", r"'seeds' appears twice \(lines 1 and 2"),
    ],
    ids=["missing", "not YAML", "a list", "a string", "a key twice"],
)
def test_a_broken_config_file_is_named(tmp_path, text, message):
    path = tmp_path / "mine.yaml"
    if text is not None:
        path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert "mine.yaml" in str(info.value) and re.search(message, str(info.value))


# Through snakemake itself: refused before any job, and nothing written to results/.


def test_a_bad_value_stops_snakemake_before_any_job(tmp_path):
    config = copy.deepcopy(BASE)
    config["hashing"]["ssdh"]["finetune"] = {"epochs": -5, "device": "banana"}
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(config))
    result = snakemake(tmp_path, "--cores", "1", configfile=path, check=False)
    text = result.stdout + result.stderr
    assert result.returncode != 0 and "Job stats" not in text
    assert "config key 'hashing.ssdh.finetune.epochs'" in text and "config key 'hashing.ssdh.finetune.device'" in text
    assert not (tmp_path / "results").exists() and not (tmp_path / "resources").exists()


def test_structured_command_line_values_are_read_as_yaml(tmp_path):
    """`--config seeds=[2]` reaches the config as [2], not ['2']."""
    plan = job_counts(snakemake(tmp_path, "-n", "--cores", "1", "--config", "seeds=[2]", 'evaluation={"topk": 5}').stdout)
    assert plan["sample_split"] == 1
    refused = snakemake(tmp_path, "-n", "--cores", "1", "--config", "seeds=[x]", check=False)
    assert refused.returncode != 0 and "config key 'seeds.0': 'x' is not of type 'integer'" in refused.stdout + refused.stderr


def test_split_sizes_are_checked_against_the_data_before_any_job(tmp_path):
    snakemake(tmp_path, "--cores", "1", "resources/datasets/digits/manifest.parquet")
    result = snakemake(tmp_path, "-n", "--cores", "1", "--config", 'protocols={"digits": {"kind": "per_class", "database_per_class": 500, "query_per_class": 30}}', check=False)
    assert result.returncode != 0 and "Job stats" not in result.stdout
    assert re.search(r"config key 'protocols.digits.database_per_class': 500 images per class asked for, but class '\d' has only \d+ images", result.stdout + result.stderr)


def test_a_second_run_on_the_same_results_is_refused_naming_the_lock(tmp_path):
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; sys.path.insert(0, sys.argv[1]); from cbir.runlock import hold; hold('results/.lock', 'results'); print('held', flush=True); time.sleep(60)", str(REPO / "src")],
        cwd=tmp_path, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        for args in (("--cores", "1"), ("-n", "--cores", "1"), ("--cores", "1", "--rerun-incomplete")):
            result = snakemake(tmp_path, *args, check=False)
            assert result.returncode != 0 and "Job stats" not in result.stdout
            text = result.stdout + result.stderr
            assert f"holds its lock results/.lock (pid {holder.pid}" in text and "do not use --unlock or --rerun-incomplete" in text
    finally:
        holder.kill()
        holder.wait()
    # Released by the kernel when its holder ends: the next run goes ahead and records itself.
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        result = snakemake(tmp_path, "--cores", "1", "resources/datasets/digits/manifest.parquet", check=False)
        if result.returncode == 0:
            break
    assert result.returncode == 0, result.stderr[-2000:]
    assert '"command": "snakemake ' in (tmp_path / "results/.lock").read_text()
