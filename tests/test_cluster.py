"""The SLURM profile on a real SLURM: every job goes through sbatch, and the results equal a
local run's. Skipped where SLURM is absent (.ci/run starts a single-node cluster)."""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pandas as pd
import pytest
import yaml

from cbir.io import read_descriptors
from conftest import REPO
from workflow import jobs_run, snakemake


def slurm_is_up() -> bool:
    if shutil.which("sbatch") is None:
        return False
    result = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True)
    return result.returncode == 0 and any(state.strip() in ("idle", "mixed", "allocated") for state in result.stdout.splitlines())


pytestmark = pytest.mark.skipif(not slurm_is_up(), reason="no SLURM cluster here (sbatch missing or no node up); .ci/slurm-up starts one")

# The embedded workflow, smaller: every stage and rule kind, one seed and length, two methods and two models.
CONFIG = yaml.safe_load((REPO / "config.yaml").read_text())
CONFIG["seeds"] = [0]
CONFIG["hashing"].update(methods=["itq", "ssdh_head"], bits=[12])
CONFIG["metric_learning"].update(models=["PT", "FT"])
CONFIG["backbones"]["smallcnn"]["finetune"]["epochs"] = 2
CONFIG["backbones"]["smallcnn"]["threads"] = 2  # the same thread count in both runs: training's float sums depend on it
CONFIG["datasets"]["digits"]["shard_size"] = 600  # sharded extraction: 1,797 images in 3 shards, each its own sbatch job

# This CI node has 2 CPUs and little memory: the profile's per-rule sizes are for real clusters.
NODE_FIT = [
    "--set-resources", "finetune:cpus_per_task=2", "extract_feature_shard:cpus_per_task=2", "finetune:mem_mb=4000", "extract_feature_shard:mem_mb=4000",
    "--slurm-init-seconds-before-status-checks", "2", "--seconds-between-status-checks", "2", "--slurm-no-account",
]


def test_slurm_run_equals_local_run(tmp_path):
    configfile = tmp_path / "config.yaml"
    configfile.write_text(yaml.safe_dump(CONFIG))
    local, cluster = tmp_path / "local", tmp_path / "slurm"
    local.mkdir()
    cluster.mkdir()
    local_run = snakemake(local, "--cores", "2", configfile=configfile)
    ran = jobs_run(local_run.stdout + local_run.stderr)  # counted as run: the shards are planned once the manifest exists
    assert ran["extract_feature_shard"] == 2 * 3 and ran["gather_features"] == 2  # pretrained and fine-tuned features
    result = snakemake(cluster, "--profile", str(REPO / "profiles" / "slurm"), *NODE_FIT, configfile=configfile)
    output = result.stdout + result.stderr

    # Every job but the local target rule `all` was an sbatch job, each shard's extraction too.
    submitted = output.count("has been submitted with SLURM jobid")
    assert submitted == sum(ran.values()) - 1, output[-3000:]

    # The same numbers: every evaluation summary, and the codes themselves.
    summaries = sorted(p.relative_to(local) for p in local.glob("results/digits/seed0/evaluation/**/summary.parquet"))
    assert len(summaries) == 1 + 2 + 2
    for path in summaries:
        pd.testing.assert_frame_equal(pd.read_parquet(local / path), pd.read_parquet(cluster / path), check_exact=False, rtol=1e-9)
    codes = sorted(local.glob("results/digits/seed0/hashing/**/descriptors.parquet"))
    assert len(codes) == 2
    for path in codes:
        np.testing.assert_array_equal(read_descriptors(path).values, read_descriptors(cluster / path.relative_to(local)).values)
    assert (cluster / "results/report/default/table2_hashing_methods.tsv").is_file()
