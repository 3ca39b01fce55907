"""Gather every descriptor's mean metrics and search time into one table."""

import sys

sys.path.insert(0, f"{snakemake.scriptdir}/../../src")  # cbir, also inside a conda env

from cbir.io import write_parquet
from cbir.logs import logged
from cbir.report import collect

with logged(snakemake.log[0]):
    metrics = collect(snakemake.params.entries)
    write_parquet(metrics, snakemake.output.parquet)
    metrics.to_csv(snakemake.output.csv, index=False)
