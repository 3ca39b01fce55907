"""Hashing stage: one hasher per dataset x backbone x method x code length."""


rule train_hash:
    input:
        features=lambda wc: features_path(wc.dataset, wc.backbone, "finetuned", backbone_cfg(wc.backbone)["feature_layer"]),
    output:
        model=f"{RESULTS}/{{dataset}}/hashing/{{backbone}}/{{method}}/{{bits}}/model.joblib",
        codes=f"{RESULTS}/{{dataset}}/hashing/{{backbone}}/{{method}}/{{bits}}/descriptors.parquet",
        trace=f"{RESULTS}/{{dataset}}/hashing/{{backbone}}/{{method}}/{{bits}}/trace.parquet",
    wildcard_constraints:
        method="ba|itq|pcah|lsh|sh",
        bits=r"\d+",
    params:
        options=lambda wc: config["hashing"]["ba"] if wc.method == "ba" else {},
        normalize=config["hashing"]["l2_normalize"],
        seed=config["seed"],
    threads: 2
    log:
        "logs/{dataset}/hashing/{backbone}/{method}/{bits}.log",
    benchmark:
        "logs/benchmarks/{dataset}/hashing/{backbone}/{method}/{bits}.tsv"
    conda:
        ENV
    script:
        "../scripts/train_hash.py"
