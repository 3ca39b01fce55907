"""Fig. 6: precision-recall curves of the hashing methods per code length."""

import sys

sys.path.insert(0, f"{snakemake.scriptdir}/../../src")  # cbir, also inside a conda env

from cbir.io import read_parquet
from cbir.logs import logged
from cbir.report import parse_descriptor, pr_figure

with logged(snakemake.log[0]):
    curves = {}
    for (dataset, descriptor), path in zip(snakemake.params.labels, snakemake.input.curves):
        fields = parse_descriptor(descriptor)
        curves[(dataset, fields["method"], fields["bits"])] = read_parquet(path)
    pr_figure(curves, snakemake.output[0])
