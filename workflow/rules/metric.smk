"""Siamese/triplet stage: the eight FC8 models on a repeat's cached pretrained FC7 features.

One job trains them all: they share one input, each starts from another's FC8, and together
they take seconds, less than starting eight processes that each load PyTorch.
"""


rule train_metric_models:
    input:
        features=lambda wc: paths.features(wc.dataset, wc.seed, wc.backbone, "pretrained", "penultimate"),
        # PT's FC8 is the pretrained network's own head: its weights file, if it has one.
        weights=lambda wc: weights_file(wc.backbone, wc.seed),
    output:
        heads=metric_outputs("head.pt"),
        descriptors=metric_outputs("descriptors.parquet"),
        histories=metric_outputs("history.parquet"),
    log:
        paths.log("{dataset}", "seed{seed}", "metric", "{backbone}"),
    benchmark:
        paths.benchmark("{dataset}", "seed{seed}", "metric", "{backbone}")
    # A chain of its own to the report (train, evaluate), longer than SSDH's: started as soon as
    # it can be, not left for the end.
    priority: 2
    conda:
        ENV
    threads: 1
    params:
        models=config["metric_learning"]["models"],
        options={k: v for k, v in config["metric_learning"].items() if k != "models"},
        backbone=extraction_params,
        kind=lambda wc: dataset_cfg(wc.dataset)["kind"],
        seed=lambda wc: int(wc.seed),
    script:
        "../scripts/train_metric_models.py"
