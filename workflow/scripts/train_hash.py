"""Fit a hasher on a split's training features at every code length and encode every image."""

import sys

sys.path.insert(0, f"{snakemake.scriptdir}/../../src")  # cbir, also inside a conda env

from threadpoolctl import threadpool_limits

from cbir.hashing.stage import train_hash
from cbir.logs import logged

with logged(snakemake.log[0]), threadpool_limits(snakemake.threads):
    out = snakemake.output
    for bits, model, codes, trace in zip(snakemake.params.bits, out.model, out.codes, out.trace):
        train_hash(
            snakemake.input.features,
            snakemake.params.method,
            bits,
            params=snakemake.params.options,
            seed=snakemake.params.seed,
            preprocess=snakemake.params.preprocess,
            train_sample=snakemake.params.train_sample,
            model_path=model,
            codes_path=codes,
            trace_path=trace,
        )
