"""Siamese/triplet stage: the eight FC8 models on cached penultimate (FC7) features."""

rule train_metric_model:
    input:
        features=lambda wc: features_path(wc.dataset, wc.backbone, "pretrained", "penultimate"),
        # The FC8 this model starts from; PT reads the backbone's weights file, if it has one.
        start=lambda wc: (
            [f"{metric_dir(wc.dataset, wc.backbone, starts_from(wc.model))}/head.pt"] if starts_from(wc.model) else []
        ),
        weights=lambda wc: weights_file(wc.backbone) if wc.model == "PT" else [],
    output:
        head=f"{RESULTS}/{{dataset}}/metric/{{backbone}}/{{model}}/head.pt",
        descriptors=f"{RESULTS}/{{dataset}}/metric/{{backbone}}/{{model}}/descriptors.parquet",
        history=f"{RESULTS}/{{dataset}}/metric/{{backbone}}/{{model}}/history.parquet",
    wildcard_constraints:
        model="PT|FT|SN-PT|SN-PT-FT|SN-FT|TN-PT|TN-PT-FT|TN-FT",
    params:
        options={k: v for k, v in config["metric_learning"].items() if k != "models"},
        backbone=lambda wc: extraction_params(wc.backbone),
        kind=lambda wc: dataset_cfg(wc.dataset)["kind"],
        seed=config["seed"],
    threads: 2
    log:
        "logs/{dataset}/metric/{backbone}/{model}.log",
    benchmark:
        "logs/benchmarks/{dataset}/metric/{backbone}/{model}.tsv"
    conda:
        ENV
    script:
        "../scripts/train_metric_model.py"
