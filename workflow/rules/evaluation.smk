"""Retrieval and evaluation of any descriptor file: hash codes, metric-learning FC8, raw features.

A descriptor is named by its place under results/<dataset>/: hashing/<backbone>/<method>/<bits>,
metric/<backbone>/<model>, or features/<backbone>/<stage>/<layer> (Euclidean on the features).
"""

rule retrieve:
    input:
        descriptor_file,
    output:
        ranking=f"{RESULTS}/{{dataset}}/retrieval/{{descriptor}}/ranking.parquet",
        timing=f"{RESULTS}/{{dataset}}/retrieval/{{descriptor}}/timing.parquet",
    wildcard_constraints:
        descriptor=DESCRIPTOR,
    params:
        k=config["evaluation"]["topk"],
        approximate=config["evaluation"]["approximate_hamming"],
    threads: 1
    log:
        "logs/{dataset}/retrieval/{descriptor}.log",
    benchmark:
        "logs/benchmarks/{dataset}/retrieval/{descriptor}.tsv"
    conda:
        ENV
    script:
        "../scripts/retrieve.py"


rule evaluate:
    input:
        descriptor_file,
    output:
        per_query=f"{RESULTS}/{{dataset}}/evaluation/{{descriptor}}/per_query.parquet",
        summary=f"{RESULTS}/{{dataset}}/evaluation/{{descriptor}}/summary.parquet",
        pr=f"{RESULTS}/{{dataset}}/evaluation/{{descriptor}}/pr.parquet",
    wildcard_constraints:
        descriptor=DESCRIPTOR,
    params:
        k=config["evaluation"]["topk"],
        holidays=lambda wc: dataset_cfg(wc.dataset)["kind"] == "holidays",
    threads: 2
    log:
        "logs/{dataset}/evaluation/{descriptor}.log",
    benchmark:
        "logs/benchmarks/{dataset}/evaluation/{descriptor}.tsv"
    conda:
        ENV
    script:
        "../scripts/evaluate.py"
