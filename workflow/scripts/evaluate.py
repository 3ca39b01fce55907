"""Evaluate a descriptor file: per-query metrics, their means and precision-recall curves."""

import sys

sys.path.insert(0, f"{snakemake.scriptdir}/../../src")  # cbir, also inside a conda env

from threadpoolctl import threadpool_limits

from cbir.evaluation import evaluate
from cbir.logs import logged

with logged(snakemake.log[0]), threadpool_limits(snakemake.threads):
    evaluate(
        snakemake.input[0],
        snakemake.output.per_query,
        snakemake.output.summary,
        snakemake.output.pr,
        snakemake.params.k,
        holidays=snakemake.params.holidays,
    )
