"""Hashing stage: one hasher per dataset x seed x backbone x method x code length."""


rule train_hash:
    input:
        features=lambda wc: paths.features(wc.dataset, wc.seed, wc.backbone, "finetuned", hashed_layer(wc.backbone)),
    output:
        model=paths.hashing("{dataset}", "{seed}", "{backbone}", "{method}", "{bits}", "model.joblib"),
        codes=paths.hashing("{dataset}", "{seed}", "{backbone}", "{method}", "{bits}", "descriptors.parquet"),
        trace=paths.hashing("{dataset}", "{seed}", "{backbone}", "{method}", "{bits}", "trace.tsv"),
    log:
        paths.log("{dataset}", "seed{seed}", "hashing", "{backbone}", "{method}", "{bits}"),
    benchmark:
        paths.benchmark("{dataset}", "seed{seed}", "hashing", "{backbone}", "{method}", "{bits}")
    wildcard_constraints:
        method="ba|itq|pcah|lsh|sh",
        bits=r"\d+",
    conda:
        ENV
    # Small BLAS problems at the papers' sizes: two single-threaded jobs beat one with two threads.
    threads: 1
    params:
        options=lambda wc: config["hashing"]["ba"] if wc.method == "ba" else {},
        normalize=config["hashing"]["l2_normalize"],
        seed=lambda wc: int(wc.seed),
    script:
        "../scripts/train_hash.py"
