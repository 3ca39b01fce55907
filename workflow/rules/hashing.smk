"""Hashing stage: one hasher per dataset x seed x backbone x method x code length.

Hashers fitted on the fine-tuned features (BA, ITQ, PCAH, LSH, SH, CCA-ITQ) share one rule; SSDH
learns its codes with a network, end to end on the images (``ssdh``; by default every code length
on one trunk, in one job) or as a head on the frozen features (``ssdh_head``). Every one writes
the codes of every image as a descriptor file.
"""


rule train_hash:
    input:
        features=hashing_features,
    output:
        model=paths.hashing("{dataset}", "{seed}", "{backbone}", "{method}", "{bits}", "model.npz"),
        metadata=paths.hashing("{dataset}", "{seed}", "{backbone}", "{method}", "{bits}", "model.json"),
        codes=paths.hashing("{dataset}", "{seed}", "{backbone}", "{method}", "{bits}", "descriptors.parquet"),
        trace=paths.hashing("{dataset}", "{seed}", "{backbone}", "{method}", "{bits}", "trace.tsv"),
    log:
        paths.log("{dataset}", "seed{seed}", "hashing", "{backbone}", "{method}", "{bits}"),
    benchmark:
        paths.benchmark("{dataset}", "seed{seed}", "hashing", "{backbone}", "{method}", "{bits}")
    wildcard_constraints:
        method="|".join(FEATURE_HASHER_NAMES),
        bits=r"\d+",
    conda:
        ENV
    # Small BLAS problems at the papers' sizes: two single-threaded jobs beat one with two threads.
    threads: 1
    params:
        method=lambda wc: hasher_spec(config, wc.method)[0],
        options=lambda wc: hasher_spec(config, wc.method)[1],
        preprocess=config["hashing"]["preprocess"],
        train_sample=train_sample,
        seed=lambda wc: int(wc.seed),
    script:
        "../scripts/train_hash.py"


# One job per code length, or (`hashing.ssdh.joint`) one job training every length on one trunk.
rule train_ssdh:
    input:
        manifest=lambda wc: paths.manifest(wc.dataset),
        split=split_file,
        cache=image_cache,
        # SSDH starts from the fine-tuned backbone (`start: finetuned`) or from its configured weights.
        weights=lambda wc: (
            [paths.backbone(wc.dataset, wc.seed, wc.backbone, "model.pt")]
            if config["hashing"]["ssdh"]["start"] == "finetuned"
            else weights_file(wc.backbone, wc.seed)
        ),
    output:
        model=ssdh_outputs("model.pt"),
        codes=ssdh_outputs("descriptors.parquet"),
        history=ssdh_outputs("history.parquet"),
    log:
        paths.log("{dataset}", "seed{seed}", "hashing", "{backbone}", "ssdh", SSDH_JOB),
    benchmark:
        paths.benchmark("{dataset}", "seed{seed}", "hashing", "{backbone}", "ssdh", SSDH_JOB)
    wildcard_constraints:
        bits=r"\d+",
    # Trains a network: started before the hashers and evaluations that are ready beside it.
    priority: 2
    conda:
        ENV
    threads: backbone_threads
    resources:
        gpu=gpus,
    params:
        backbone=training_params,
        ssdh={k: v for k, v in config["hashing"]["ssdh"].items() if k != "head_only"},
        bits=ssdh_bits,
        kind=lambda wc: dataset_cfg(wc.dataset)["kind"],
        seed=lambda wc: int(wc.seed),
    script:
        "../scripts/train_ssdh.py"


rule train_ssdh_head:
    input:
        features=hashing_features,
    output:
        model=paths.hashing("{dataset}", "{seed}", "{backbone}", "ssdh_head", "{bits}", "model.pt"),
        codes=paths.hashing("{dataset}", "{seed}", "{backbone}", "ssdh_head", "{bits}", "descriptors.parquet"),
        history=paths.hashing("{dataset}", "{seed}", "{backbone}", "ssdh_head", "{bits}", "history.parquet"),
    log:
        paths.log("{dataset}", "seed{seed}", "hashing", "{backbone}", "ssdh_head", "{bits}"),
    benchmark:
        paths.benchmark("{dataset}", "seed{seed}", "hashing", "{backbone}", "ssdh_head", "{bits}")
    wildcard_constraints:
        bits=r"\d+",
    conda:
        ENV
    threads: 1
    params:
        ssdh={k: v for k, v in config["hashing"]["ssdh"].items() if k in ("alpha", "beta", "head_only")},
        seed=lambda wc: int(wc.seed),
    script:
        "../scripts/train_ssdh_head.py"
