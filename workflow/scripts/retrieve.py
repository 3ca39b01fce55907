"""Search a descriptor file's queries in its database: top-k rankings and time per query."""

import sys

sys.path.insert(0, f"{snakemake.scriptdir}/../../src")  # cbir, also inside a conda env

from cbir.evaluation import retrieve
from cbir.logs import logged

with logged(snakemake.log[0]):
    retrieve(snakemake.input[0], snakemake.output.ranking, snakemake.output.timing, snakemake.params.k, approximate=snakemake.params.approximate)
