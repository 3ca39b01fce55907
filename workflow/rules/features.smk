"""Feature stage: fine-tune each backbone on a repeat's training images, then dump features."""


rule cache_images:
    input:
        manifest=lambda wc: paths.manifest(wc.dataset),
    output:
        paths.image_cache("{dataset}", "{mode}", "{size}"),
    log:
        paths.log("datasets", "{dataset}", "cache", "{mode}{size}"),
    benchmark:
        paths.benchmark("datasets", "{dataset}", "cache", "{mode}{size}")
    wildcard_constraints:
        mode="L|RGB",
        size=r"\d+",
    conda:
        ENV
    threads: 4
    script:
        "../scripts/cache_images.py"


rule finetune:
    input:
        manifest=lambda wc: paths.manifest(wc.dataset),
        split=split_file,
        cache=image_cache,
        weights=lambda wc: weights_file(wc.backbone, wc.seed),
    output:
        model=paths.backbone("{dataset}", "{seed}", "{backbone}", "model.pt"),
        history=paths.backbone("{dataset}", "{seed}", "{backbone}", "history.parquet"),
    log:
        paths.log("{dataset}", "seed{seed}", "finetune", "{backbone}"),
    benchmark:
        paths.benchmark("{dataset}", "seed{seed}", "finetune", "{backbone}")
    # Fine-tuning heads the longest chains (features, SSDH, hashing, the siamese/triplet models):
    # started before anything else that is ready, or a many-core machine leaves it to the end.
    priority: 3
    conda:
        ENV
    threads: backbone_threads
    resources:
        gpu=gpus,
    params:
        backbone=training_params,
        kind=lambda wc: dataset_cfg(wc.dataset)["kind"],
        seed=lambda wc: int(wc.seed),
    script:
        "../scripts/finetune.py"


rule extract_features:
    input:
        manifest=lambda wc: paths.manifest(wc.dataset),
        split=split_file,
        cache=image_cache,
        # Fine-tuned features come from the fine-tuned model, pretrained ones from the configured weights.
        weights=lambda wc: (
            [paths.backbone(wc.dataset, wc.seed, wc.backbone, "model.pt")]
            if wc.stage == "finetuned"
            else weights_file(wc.backbone, wc.seed)
        ),
    output:
        paths.features("{dataset}", "{seed}", "{backbone}", "{stage}", "{layer}"),
    log:
        paths.log("{dataset}", "seed{seed}", "features", "{backbone}", "{stage}", "{layer}"),
    benchmark:
        paths.benchmark("{dataset}", "seed{seed}", "features", "{backbone}", "{stage}", "{layer}")
    wildcard_constraints:
        dataset=dataset_pattern(UNSHARDED),
        stage="finetuned|pretrained",
        layer="penultimate|logits|fc6",
    # Started first: features unblock the most jobs (hashing, the siamese/triplet models).
    priority: 2
    conda:
        ENV
    threads: backbone_threads
    resources:
        gpu=gpus,
    params:
        backbone=extraction_params,
        kind=lambda wc: dataset_cfg(wc.dataset)["kind"],
        seed=lambda wc: int(wc.seed),
    script:
        "../scripts/extract_features.py"


# Sharded extraction (datasets with `shard_size`): one job per shard of the dataset's images, then
# a gather into a Parquet dataset that takes the place of the descriptor file.
rule extract_feature_shard:
    input:
        pixels=lambda wc: shard_inputs(wc)["pixels"],
        cache=lambda wc: shard_inputs(wc)["cache"],
        weights=lambda wc: (
            [paths.backbone(wc.dataset, wc.seed, wc.backbone, "model.pt")]
            if wc.stage == "finetuned"
            else weights_file(wc.backbone, wc.seed)
        ),
    output:
        paths.feature_shard("{dataset}", "{seed}", "{backbone}", "{stage}", "{layer}", "{shard}"),
    log:
        paths.log("{dataset}", "seed{seed}", "features", "{backbone}", "{stage}", "{layer}", "shard{shard}"),
    benchmark:
        paths.benchmark("{dataset}", "seed{seed}", "features", "{backbone}", "{stage}", "{layer}", "shard{shard}")
    wildcard_constraints:
        dataset=dataset_pattern(SHARDED),
        stage="finetuned|pretrained",
        layer="penultimate|logits|fc6",
        shard=r"\d+",
    priority: 2
    conda:
        ENV
    threads: backbone_threads
    resources:
        gpu=gpus,
    params:
        manifest=lambda wc: paths.manifest(wc.dataset),
        rows=shard_rows,
        images=shard_images,
        backbone=extraction_params,
        kind=lambda wc: dataset_cfg(wc.dataset)["kind"],
        seed=lambda wc: int(wc.seed),
    script:
        "../scripts/extract_feature_shard.py"


rule gather_features:
    input:
        split=split_file,
        shards=feature_shards,
    output:
        directory(paths.features("{dataset}", "{seed}", "{backbone}", "{stage}", "{layer}")),
    log:
        paths.log("{dataset}", "seed{seed}", "features", "{backbone}", "{stage}", "{layer}", "gather"),
    benchmark:
        paths.benchmark("{dataset}", "seed{seed}", "features", "{backbone}", "{stage}", "{layer}", "gather")
    wildcard_constraints:
        dataset=dataset_pattern(SHARDED),
        stage="finetuned|pretrained",
        layer="penultimate|logits|fc6",
    conda:
        ENV
    script:
        "../scripts/gather_features.py"
