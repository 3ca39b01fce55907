"""Fine-tune a backbone on a split's training images."""

import os
import sys

sys.path.insert(0, f"{snakemake.scriptdir}/../../src")  # cbir, also inside a conda env
os.environ.setdefault("TORCH_HOME", "resources/weights")  # where ImageNet weights are downloaded

import torch

from cbir.features import train_backbone
from cbir.logs import logged

with logged(snakemake.log[0]):
    torch.set_num_threads(snakemake.threads)
    train_backbone(
        snakemake.input.manifest,
        snakemake.input.split,
        snakemake.params.backbone,
        snakemake.params.kind,
        snakemake.params.seed,
        snakemake.output.model,
        snakemake.output.history,
        image_cache=snakemake.input.cache[0] if snakemake.input.cache else None,
    )
