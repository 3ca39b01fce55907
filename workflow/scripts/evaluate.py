"""Search each descriptor file's queries once: ranking, time per query, metrics under both ground truths."""

import sys

sys.path.insert(0, f"{snakemake.scriptdir}/../../src")  # cbir, also inside a conda env

from threadpoolctl import threadpool_limits

from cbir.evaluation import evaluate_all
from cbir.logs import logged
from cbir.provenance import provenance

with logged(snakemake.log[0]), threadpool_limits(snakemake.threads):
    evaluate_all(
        snakemake.input.descriptors,
        [{name: files[i] for name, files in snakemake.output.items()} for i in range(len(snakemake.input.descriptors))],
        snakemake.params.k,
        reference_path=snakemake.input.reference if snakemake.params.reference else None,
        preprocess=snakemake.params.preprocess,
        n_neighbours=snakemake.params.neighbours,
        holidays=snakemake.params.holidays,
        approximate=snakemake.params.approximate,
        provenance=provenance(),
    )
