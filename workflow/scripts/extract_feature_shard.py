"""Dump one layer's features for one shard of a dataset's images."""

import os
import sys

sys.path.insert(0, f"{snakemake.scriptdir}/../../src")  # cbir, also inside a conda env
os.environ.setdefault("TORCH_HOME", "resources/weights")  # where ImageNet weights are downloaded

import torch

from cbir.features import extract_feature_shard
from cbir.logs import logged

with logged(snakemake.log[0]):
    torch.set_num_threads(snakemake.threads)
    extract_feature_shard(
        snakemake.params.manifest,
        snakemake.params.rows,
        snakemake.params.backbone,
        snakemake.params.kind,
        snakemake.wildcards.layer,
        snakemake.output[0],
        weights_path=snakemake.input.weights[0] if snakemake.input.weights else None,
        seed=snakemake.params.seed,
        image_cache=snakemake.input.cache[0] if snakemake.input.cache else None,
    )
