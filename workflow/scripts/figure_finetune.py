"""Fig. 4: fine-tuning accuracy per epoch."""

import sys

sys.path.insert(0, f"{snakemake.scriptdir}/../../src")  # cbir, also inside a conda env

from cbir.io import read_parquet
from cbir.logs import logged
from cbir.report import finetune_figure

with logged(snakemake.log[0]):
    histories = {name: read_parquet(path) for name, path in zip(snakemake.params.names, snakemake.input.histories)}
    finetune_figure(histories, snakemake.output[0])
