"""Train an SSDH head on a split's cached features and write every image's code."""

import sys

sys.path.insert(0, f"{snakemake.scriptdir}/../../src")  # cbir, also inside a conda env

import torch

from cbir.logs import logged
from cbir.ssdh import train_ssdh_head

with logged(snakemake.log[0]):
    torch.set_num_threads(snakemake.threads)
    train_ssdh_head(
        snakemake.input.features,
        snakemake.params.ssdh,
        snakemake.params.seed,
        int(snakemake.wildcards.bits),
        snakemake.output.model,
        snakemake.output.codes,
        snakemake.output.history,
    )
