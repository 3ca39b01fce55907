"""Fig. 5: the binary autoencoder's objective per iteration."""

import sys

sys.path.insert(0, f"{snakemake.scriptdir}/../../src")  # cbir, also inside a conda env

from cbir.io import read_parquet
from cbir.logs import logged
from cbir.report import ba_objective_figure

with logged(snakemake.log[0]):
    traces = {(name, bits): read_parquet(path) for (name, bits), path in zip(snakemake.params.labels, snakemake.input.traces)}
    ba_objective_figure(traces, snakemake.output[0])
