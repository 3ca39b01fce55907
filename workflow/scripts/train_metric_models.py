"""Train the siamese/triplet paper's FC8 models on cached FC7 features and write their descriptors."""

import os
import sys

sys.path.insert(0, f"{snakemake.scriptdir}/../../src")  # cbir, also inside a conda env
os.environ.setdefault("TORCH_HOME", "resources/weights")  # where ImageNet weights are downloaded

import torch

from cbir.logs import logged
from cbir.metric_learning import train_models

with logged(snakemake.log[0]):
    torch.set_num_threads(snakemake.threads)
    models = snakemake.params.models
    outputs = {
        model: {"head": head, "descriptors": descriptors, "history": history}
        for model, head, descriptors, history in zip(models, snakemake.output.heads, snakemake.output.descriptors, snakemake.output.histories)
    }
    train_models(
        models,
        snakemake.input.features,
        snakemake.params.options,
        snakemake.params.seed,
        snakemake.params.backbone,
        snakemake.params.kind,
        outputs,
        weights_path=snakemake.input.weights[0] if snakemake.input.weights else None,
    )
