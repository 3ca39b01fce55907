"""Train one of the eight siamese/triplet-paper models' FC8 and write its descriptors."""

import os
import sys

sys.path.insert(0, f"{snakemake.scriptdir}/../../src")  # cbir, also inside a conda env
os.environ.setdefault("TORCH_HOME", "resources/weights")  # where ImageNet weights are downloaded

import torch

from cbir.logs import logged
from cbir.metric_learning import train_model

with logged(snakemake.log[0]):
    torch.set_num_threads(snakemake.threads)
    train_model(
        snakemake.wildcards.model,
        snakemake.input.features,
        snakemake.input.start[0] if snakemake.input.start else None,
        snakemake.params.options,
        snakemake.params.seed,
        snakemake.params.backbone,
        snakemake.params.kind,
        snakemake.output.head,
        snakemake.output.descriptors,
        snakemake.output.history,
    )
