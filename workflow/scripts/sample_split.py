"""Sample a split protocol's train/database/query roles and count them per class."""

import sys

sys.path.insert(0, f"{snakemake.scriptdir}/../../src")  # cbir, also inside a conda env

from cbir.datasets import read_manifest
from cbir.io import write_parquet, write_table
from cbir.logs import logged
from cbir.splits import class_counts, sample_split

with logged(snakemake.log[0]) as log:
    split = sample_split(read_manifest(snakemake.input.manifest), snakemake.params.protocol, snakemake.params.seed, snakemake.wildcards.protocol)
    counts = class_counts(split)
    write_parquet(split, snakemake.output.split)
    write_table(counts, snakemake.output.counts)
    log.info("images per class and role:\n%s", counts.to_string(index=False))
