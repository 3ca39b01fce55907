"""Fit a hasher on a split's training features and encode every image."""

import sys

sys.path.insert(0, f"{snakemake.scriptdir}/../../src")  # cbir, also inside a conda env

from threadpoolctl import threadpool_limits

from cbir.hashing.stage import train_hash
from cbir.logs import logged

with logged(snakemake.log[0]), threadpool_limits(snakemake.threads):
    train_hash(
        snakemake.input.features,
        snakemake.wildcards.method,
        int(snakemake.wildcards.bits),
        snakemake.params.options,
        snakemake.params.seed,
        snakemake.params.normalize,
        snakemake.output.model,
        snakemake.output.codes,
        snakemake.output.trace,
    )
