"""Figs. 8-9 of the siamese/triplet paper: precision@k and mAP per model."""

import sys

sys.path.insert(0, f"{snakemake.scriptdir}/../../src")  # cbir, also inside a conda env

from cbir.io import read_parquet
from cbir.logs import logged
from cbir.report import metric_figures

with logged(snakemake.log[0]):
    curves = {(dataset, model): read_parquet(path) for (dataset, model), path in zip(snakemake.params.labels, snakemake.input.curves)}
    metric_figures(read_parquet(snakemake.input.metrics), curves, snakemake.params.models, snakemake.output.precision, snakemake.output.map)
