"""Tables I and II of the hashing paper."""

import sys

sys.path.insert(0, f"{snakemake.scriptdir}/../../src")  # cbir, also inside a conda env

from cbir.logs import logged
from cbir.report import hashing_tables

with logged(snakemake.log[0]):
    out = snakemake.output
    hashing_tables(snakemake.input[0], out.table1, out.table1_md, out.table2, out.table2_md)
