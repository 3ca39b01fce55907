"""Search a descriptor file's queries once: ranking, time per query, metrics under both ground truths."""

import sys

sys.path.insert(0, f"{snakemake.scriptdir}/../../src")  # cbir, also inside a conda env

from threadpoolctl import threadpool_limits

from cbir.evaluation import evaluate
from cbir.logs import logged
from cbir.provenance import provenance

with logged(snakemake.log[0]), threadpool_limits(snakemake.threads):
    evaluate(
        snakemake.input.descriptors,
        dict(snakemake.output.items()),
        snakemake.params.k,
        reference_path=snakemake.input.reference[0] if snakemake.input.reference else None,
        preprocess=snakemake.params.preprocess,
        n_neighbours=snakemake.params.neighbours,
        holidays=snakemake.params.holidays,
        approximate=snakemake.params.approximate,
        provenance=provenance(),
    )
