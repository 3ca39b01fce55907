"""The retrieval explorer of one dataset: a static HTML page for the report."""

import sys

sys.path.insert(0, f"{snakemake.scriptdir}/../../src")  # cbir, also inside a conda env

from cbir.logs import logged
from cbir.web.explorer import write_explorer

with logged(snakemake.log[0]):
    write_explorer(
        snakemake.params.title,
        {name: {"ranking": ranking, "per_query": per_query} for name, ranking, per_query in zip(snakemake.params.descriptors, snakemake.input.rankings, snakemake.input.per_query, strict=True)},
        snakemake.input.manifest,
        snakemake.params.mode,
        snakemake.output[0],
        seed=snakemake.params.seed,
    )
