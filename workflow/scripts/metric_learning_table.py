"""The siamese/triplet paper's precision and mAP table."""

import sys

sys.path.insert(0, f"{snakemake.scriptdir}/../../src")  # cbir, also inside a conda env

from cbir.logs import logged
from cbir.report import metric_learning_tables

with logged(snakemake.log[0]):
    metric_learning_tables(snakemake.input[0], snakemake.params.models, snakemake.output.table, snakemake.output.markdown)
