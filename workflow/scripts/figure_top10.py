"""Fig. 7: queries and their top ten results."""

import sys

sys.path.insert(0, f"{snakemake.scriptdir}/../../src")  # cbir, also inside a conda env

from cbir.datasets import read_manifest
from cbir.io import read_parquet
from cbir.logs import logged
from cbir.report import top10_figure

with logged(snakemake.log[0]):
    top10_figure(
        read_parquet(snakemake.input.ranking),
        read_manifest(snakemake.input.manifest),
        snakemake.params.mode,
        snakemake.output[0],
        seed=snakemake.params.seed,
        title=f"{snakemake.wildcards.dataset}: top 10 by {snakemake.params.descriptor} (green: same class, red: another)",
    )
