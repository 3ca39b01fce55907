"""Evaluation of any descriptor file: hash codes, siamese/triplet FC8 descriptors, raw features.

A job searches the queries once: it writes their top-k ranking, the search time per query, and
every metric under both ground truths (class labels, and for hash codes the K Euclidean nearest
neighbours in the float feature space the hashers were trained on). One job per (dataset, seed, descriptor) for hash codes
and features, so that a changed hasher reruns only its own evaluation; the eight siamese/triplet
models are trained by one job, so one job evaluates them together (each evaluation takes
a fraction of a second, less than starting a process).
"""

EVALUATION_FILES = ("ranking", "timing", "per_query", "summary", "pr")


rule evaluate:
    input:
        descriptors=lambda wc: paths.descriptor(wc.dataset, wc.seed, wc.descriptor),
        reference=reference_features,
    output:
        **{name: paths.evaluation("{dataset}", "{seed}", "{descriptor}", name) for name in EVALUATION_FILES},
    log:
        paths.log("{dataset}", "seed{seed}", "evaluation", "{descriptor}"),
    benchmark:
        paths.benchmark("{dataset}", "seed{seed}", "evaluation", "{descriptor}")
    wildcard_constraints:
        descriptor=SEARCHED_ALONE_PATTERN,
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


rule evaluate_metric_models:
    input:
        descriptors=metric_outputs("descriptors.parquet"),
    output:
        **{name: metric_evaluations(name) for name in EVALUATION_FILES},
    log:
        paths.log("{dataset}", "seed{seed}", "evaluation", "metric", "{backbone}"),
    benchmark:
        paths.benchmark("{dataset}", "seed{seed}", "evaluation", "metric", "{backbone}")
    conda:
        ENV
    threads: 1
    params:
        k=config["evaluation"]["topk"],
        approximate=config["evaluation"]["approximate_hamming"],
        holidays=lambda wc: dataset_cfg(wc.dataset)["kind"] == "holidays",
    script:
        "../scripts/evaluate_metric_models.py"
