"""Evaluation of descriptor files: hash codes, siamese/triplet FC8 descriptors, raw features.

A job searches each descriptor file's queries once: it writes their top-k ranking, the search
time per query, and every metric under both ground truths (class labels, and for hash codes the
K Euclidean nearest neighbours in the float feature space the hashers were trained on). One job
evaluates what belongs together, so that a change reruns its own evaluations and few processes
start (each evaluation takes about a second, about what starting a process costs): a hashing
method's codes of every length, the eight siamese/triplet models, a backbone's features.
"""

EVALUATION_FILES = ("ranking", "timing", "per_query", "summary", "pr")
EVALUATION_PARAMS = {
    "k": config["evaluation"]["topk"],
    "neighbours": config["evaluation"]["neighbours"],
    "preprocess": config["hashing"]["preprocess"],
    "approximate": config["evaluation"]["approximate_hamming"],
}


rule evaluate_features:
    input:
        descriptors=lambda wc: [paths.descriptor(wc.dataset, wc.seed, wc.descriptor)],
    output:
        **{name: [paths.evaluation("{dataset}", "{seed}", "{descriptor}", name)] for name in EVALUATION_FILES},
    log:
        paths.log("{dataset}", "seed{seed}", "evaluation", "{descriptor}"),
    benchmark:
        paths.benchmark("{dataset}", "seed{seed}", "evaluation", "{descriptor}")
    wildcard_constraints:
        descriptor=FEATURES_PATTERN,
    conda:
        ENV
    threads: 1
    params:
        **EVALUATION_PARAMS,
        reference=False,
        holidays=lambda wc: dataset_cfg(wc.dataset)["kind"] == "holidays",
    script:
        "../scripts/evaluate.py"


rule evaluate_codes:
    input:
        descriptors=lambda wc: [paths.descriptor(wc.dataset, wc.seed, d) for d in method_descriptors(wc)],
        # The neighbours ground truth: the float features the codes were learned from.
        reference=lambda wc: paths.features(wc.dataset, wc.seed, wc.backbone, "finetuned", hashed_layer(wc.backbone)),
    output:
        **{name: code_evaluations(name) for name in EVALUATION_FILES},
    log:
        paths.log("{dataset}", "seed{seed}", "evaluation", "hashing", "{backbone}", "{method}"),
    benchmark:
        paths.benchmark("{dataset}", "seed{seed}", "evaluation", "hashing", "{backbone}", "{method}")
    conda:
        ENV
    threads: 1
    params:
        **EVALUATION_PARAMS,
        reference=True,
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
        **EVALUATION_PARAMS,
        reference=False,
        holidays=lambda wc: dataset_cfg(wc.dataset)["kind"] == "holidays",
    script:
        "../scripts/evaluate.py"
