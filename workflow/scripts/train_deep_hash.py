"""Train a deep hashing method end to end on a split's training images (one code length, or several on one trunk) and write every image's codes."""

import os
import sys

sys.path.insert(0, f"{snakemake.scriptdir}/../../src")  # cbir, also inside a conda env
os.environ.setdefault("TORCH_HOME", "resources/weights")  # where ImageNet weights are downloaded

import torch

from cbir.deephash.core import outputs_by_length, train_end_to_end
from cbir.logs import logged

with logged(snakemake.log[0]):
    torch.set_num_threads(snakemake.threads)
    train_end_to_end(
        snakemake.input.manifest,
        snakemake.input.split,
        snakemake.params.backbone,
        snakemake.wildcards.method,
        snakemake.params.section,
        snakemake.params.kind,
        snakemake.params.seed,
        outputs_by_length(snakemake.params.bits, snakemake.output.model, snakemake.output.codes, snakemake.output.history),
        weights_path=snakemake.input.weights[0] if snakemake.input.weights else None,
        image_cache=snakemake.input.cache[0] if snakemake.input.cache else None,
    )
