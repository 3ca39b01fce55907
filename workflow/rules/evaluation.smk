"""Evaluation of any descriptor file: hash codes, siamese/triplet FC8 descriptors, raw features.

One job per (dataset, seed, descriptor) searches the queries once: it writes their top-k
ranking, the search time per query, and every metric under both ground truths (class labels,
and the K Euclidean nearest neighbours in the hashed feature space).
"""


rule evaluate:
    input:
        descriptors=lambda wc: paths.descriptor(wc.dataset, wc.seed, wc.descriptor),
        reference=reference_features,
    output:
        ranking=paths.evaluation("{dataset}", "{seed}", "{descriptor}", "ranking"),
        timing=paths.evaluation("{dataset}", "{seed}", "{descriptor}", "timing"),
        per_query=paths.evaluation("{dataset}", "{seed}", "{descriptor}", "per_query"),
        summary=paths.evaluation("{dataset}", "{seed}", "{descriptor}", "summary"),
        pr=paths.evaluation("{dataset}", "{seed}", "{descriptor}", "pr"),
    log:
        paths.log("{dataset}", "seed{seed}", "evaluation", "{descriptor}"),
    benchmark:
        paths.benchmark("{dataset}", "seed{seed}", "evaluation", "{descriptor}")
    conda:
        ENV
    threads: 1
    params:
        k=config["evaluation"]["topk"],
        neighbours=config["evaluation"]["neighbours"],
        preprocess=config["hashing"]["preprocess"],
        approximate=config["evaluation"]["approximate_hamming"],
        holidays=lambda wc: dataset_cfg(wc.dataset)["kind"] == "holidays",
    script:
        "../scripts/evaluate.py"
