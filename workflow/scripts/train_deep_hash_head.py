"""Train a deep hashing method's hash layer on a split's cached features, one per code length, and write every image's codes."""

import sys

sys.path.insert(0, f"{snakemake.scriptdir}/../../src")  # cbir, also inside a conda env

import torch

from cbir.deephash.core import outputs_by_length, train_head
from cbir.logs import logged

with logged(snakemake.log[0]):
    torch.set_num_threads(snakemake.threads)
    train_head(
        snakemake.input.features,
        snakemake.params.method,
        snakemake.params.section,
        snakemake.params.seed,
        outputs_by_length(snakemake.params.bits, snakemake.output.model, snakemake.output.codes, snakemake.output.history),
        snakemake.params.validation_fraction,
    )
