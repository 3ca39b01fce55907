"""Fit a hasher on a split's training features and encode every image."""

import sys

sys.path.insert(0, f"{snakemake.scriptdir}/../../src")  # cbir, also inside a conda env

from threadpoolctl import threadpool_limits

from cbir.hashing.stage import train_hash
from cbir.logs import logged

with logged(snakemake.log[0]), threadpool_limits(snakemake.threads):
    train_hash(
        snakemake.input.features,
        snakemake.params.method,
        int(snakemake.wildcards.bits),
        params=snakemake.params.options,
        seed=snakemake.params.seed,
        preprocess=snakemake.params.preprocess,
        train_sample=snakemake.params.train_sample,
        model_path=snakemake.output.model,
        codes_path=snakemake.output.codes,
        trace_path=snakemake.output.trace,
    )
