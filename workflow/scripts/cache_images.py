"""Decode a dataset's images once, in one colour mode and size, for training and extraction."""

import sys

sys.path.insert(0, f"{snakemake.scriptdir}/../../src")  # cbir, also inside a conda env

from cbir.image_cache import build_image_cache
from cbir.logs import logged

with logged(snakemake.log[0]):
    build_image_cache(snakemake.input.manifest, snakemake.wildcards.mode, int(snakemake.wildcards.size), snakemake.output[0], threads=snakemake.threads)
