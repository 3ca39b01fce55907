"""Search each siamese/triplet model's descriptors in turn: ranking, time per query, metrics."""

import sys

sys.path.insert(0, f"{snakemake.scriptdir}/../../src")  # cbir, also inside a conda env

from threadpoolctl import threadpool_limits

from cbir.evaluation import evaluate
from cbir.logs import logged
from cbir.provenance import provenance

with logged(snakemake.log[0]), threadpool_limits(snakemake.threads):
    for i, descriptors in enumerate(snakemake.input.descriptors):
        evaluate(
            descriptors,
            {name: files[i] for name, files in snakemake.output.items()},
            snakemake.params.k,
            holidays=snakemake.params.holidays,
            approximate=snakemake.params.approximate,
            provenance=provenance(),
        )
