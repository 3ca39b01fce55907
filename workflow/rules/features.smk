"""Feature stage: fine-tune each backbone on a dataset's training images, then dump features."""


rule finetune:
    input:
        manifest=lambda wc: manifest_path(wc.dataset),
        split=lambda wc: split_path(wc.dataset),
        weights=lambda wc: weights_file(wc.backbone),
    output:
        model=f"{RESULTS}/{{dataset}}/backbones/{{backbone}}/model.pt",
        history=f"{RESULTS}/{{dataset}}/backbones/{{backbone}}/history.parquet",
    params:
        backbone=lambda wc: training_params(wc.backbone),
        kind=lambda wc: dataset_cfg(wc.dataset)["kind"],
        seed=config["seed"],
    threads: 4
    resources:
        gpu=lambda wc: gpus(wc.backbone),
    log:
        "logs/{dataset}/finetune/{backbone}.log",
    benchmark:
        "logs/benchmarks/{dataset}/finetune/{backbone}.tsv"
    conda:
        ENV
    script:
        "../scripts/finetune.py"


rule extract_features:
    input:
        manifest=lambda wc: manifest_path(wc.dataset),
        split=lambda wc: split_path(wc.dataset),
        # Fine-tuned features come from the fine-tuned model, pretrained ones from the configured weights.
        weights=lambda wc: (
            [rules.finetune.output.model.format(dataset=wc.dataset, backbone=wc.backbone)]
            if wc.stage == "finetuned"
            else weights_file(wc.backbone)
        ),
    output:
        features_path("{dataset}", "{backbone}", "{stage}", "{layer}"),
    wildcard_constraints:
        stage="finetuned|pretrained",
        layer="penultimate|logits|fc6",
    params:
        backbone=lambda wc: extraction_params(wc.backbone),
        kind=lambda wc: dataset_cfg(wc.dataset)["kind"],
        seed=config["seed"],
    threads: 4
    resources:
        gpu=lambda wc: gpus(wc.backbone),
    log:
        "logs/{dataset}/features/{backbone}/{stage}/{layer}.log",
    benchmark:
        "logs/benchmarks/{dataset}/features/{backbone}/{stage}/{layer}.tsv"
    conda:
        ENV
    script:
        "../scripts/extract_features.py"
