"""The papers' tables and figures, results.tsv and provenance.json of this configuration."""

import sys

sys.path.insert(0, f"{snakemake.scriptdir}/../../src")  # cbir, also inside a conda env

from cbir.logs import logged
from cbir.provenance import provenance
from cbir.report import write_report

with logged(snakemake.log[0]):
    params = snakemake.params
    write_report(
        params.entries,
        params.histories,
        params.traces,
        params.showcases,
        params.models,
        params.n_neighbours,
        provenance(params.config),
        dict(snakemake.output.items()),
    )
