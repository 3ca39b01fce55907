"""Search time per query of every descriptor."""

import sys

sys.path.insert(0, f"{snakemake.scriptdir}/../../src")  # cbir, also inside a conda env

from cbir.logs import logged
from cbir.report import timing_tables

with logged(snakemake.log[0]):
    timing_tables(snakemake.input[0], snakemake.output.table, snakemake.output.markdown)
