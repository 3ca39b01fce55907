"""Write a dataset's manifest (and pixel array) from a download or a local copy."""

import sys

sys.path.insert(0, f"{snakemake.scriptdir}/../../src")  # cbir, also inside a conda env

from cbir.datasets import prepare_dataset
from cbir.logs import logged

with logged(snakemake.log[0]):
    prepare_dataset(
        snakemake.params.kind,
        snakemake.output.manifest,
        root=snakemake.params.root,
        download_dir=snakemake.params.download_dir,
        checksums=snakemake.params.checksums,
        labels=snakemake.input.get("labels"),
    )
