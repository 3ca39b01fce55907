"""Gather a layer's feature shards into a Parquet dataset for a split's images."""

import sys

sys.path.insert(0, f"{snakemake.scriptdir}/../../src")  # cbir, also inside a conda env

from cbir.features import gather_features
from cbir.logs import logged

with logged(snakemake.log[0]):
    gather_features(snakemake.input.split, snakemake.input.shards, snakemake.output[0])
