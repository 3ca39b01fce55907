"""Hashing stage: one job per dataset x seed x backbone x method, fitting every code length.

Hashers fitted on the fine-tuned features (BA, ITQ, PCAH, LSH, SH, CCA-ITQ, hasher plug-ins) share
one rule; the deep hashing methods (SSDH, DPSH, HashNet, DSH, GreedyHash, CSQ, loss plug-ins; see
cbir.plugins) learn a hash layer, end to end on the images (``<method>``; by default every code
length on one trunk, in one job) or on the frozen features (``<method>_head``). Every one writes
the codes of every image as a descriptor file.
"""


# Every code length of a method in one job: a fit takes about a second, about what starting the
# job's process costs.
rule train_hash:
    input:
        features=hashing_features,
    output:
        model=hash_outputs("model.npz", config["hashing"]["bits"]),
        metadata=hash_outputs("model.json", config["hashing"]["bits"]),
        codes=hash_outputs("descriptors.parquet", config["hashing"]["bits"]),
        trace=hash_outputs("trace.tsv", config["hashing"]["bits"]),
    log:
        paths.log("{dataset}", "seed{seed}", "hashing", "{backbone}", "{method}"),
    benchmark:
        paths.benchmark("{dataset}", "seed{seed}", "hashing", "{backbone}", "{method}")
    wildcard_constraints:
        method=one_of(FEATURE_HASHER_NAMES),
    conda:
        ENV
    # Small BLAS problems at the papers' sizes: two single-threaded jobs beat one with two threads.
    threads: 1
    params:
        method=lambda wc: hasher_spec(config, wc.method)[0],
        options=lambda wc: hasher_spec(config, wc.method)[1],
        bits=config["hashing"]["bits"],
        preprocess=config["hashing"]["preprocess"],
        train_sample=train_sample,
        seed=lambda wc: int(wc.seed),
    script:
        "../scripts/train_hash.py"


# End to end: every code length on one trunk in one job (`joint`, the default), or one job per length.
rule train_deep_hash_joint:
    input:
        manifest=lambda wc: paths.manifest(wc.dataset),
        split=split_file,
        cache=image_cache,
        weights=deep_weights,
    output:
        model=hash_outputs("model.pt", config["hashing"]["bits"]),
        codes=hash_outputs("descriptors.parquet", config["hashing"]["bits"]),
        history=hash_outputs("history.parquet", config["hashing"]["bits"]),
    log:
        paths.log("{dataset}", "seed{seed}", "hashing", "{backbone}", "{method}", "joint"),
    benchmark:
        paths.benchmark("{dataset}", "seed{seed}", "hashing", "{backbone}", "{method}", "joint")
    wildcard_constraints:
        method=one_of(JOINT_DEEP),
    # Trains a network: started before the hashers and evaluations that are ready beside it.
    priority: 2
    conda:
        ENV
    threads: backbone_threads
    resources:
        gpu=gpus,
    params:
        backbone=training_params,
        section=lambda wc: deep_section(wc, ("finetune",)),
        bits=deep_bits,
        kind=lambda wc: dataset_cfg(wc.dataset)["kind"],
        seed=lambda wc: int(wc.seed),
    script:
        "../scripts/train_deep_hash.py"


use rule train_deep_hash_joint as train_deep_hash_per_length with:
    output:
        model=hash_outputs("model.pt", ["{bits}"]),
        codes=hash_outputs("descriptors.parquet", ["{bits}"]),
        history=hash_outputs("history.parquet", ["{bits}"]),
    log:
        paths.log("{dataset}", "seed{seed}", "hashing", "{backbone}", "{method}", "{bits}"),
    benchmark:
        paths.benchmark("{dataset}", "seed{seed}", "hashing", "{backbone}", "{method}", "{bits}")
    wildcard_constraints:
        method=one_of(PER_LENGTH_DEEP),
        bits=r"\d+",


# Head only: a hash layer per code length on the cached features, every length in one job.
rule train_deep_hash_head:
    input:
        features=hashing_features,
    output:
        model=hash_outputs("model.pt", config["hashing"]["bits"]),
        codes=hash_outputs("descriptors.parquet", config["hashing"]["bits"]),
        history=hash_outputs("history.parquet", config["hashing"]["bits"]),
    log:
        paths.log("{dataset}", "seed{seed}", "hashing", "{backbone}", "{method}"),
    benchmark:
        paths.benchmark("{dataset}", "seed{seed}", "hashing", "{backbone}", "{method}")
    wildcard_constraints:
        method=one_of(HEAD_DEEP),
    conda:
        ENV
    threads: 1
    params:
        method=lambda wc: deep_method(wc.method),
        section=lambda wc: deep_section(wc, ("head_only",)),
        bits=config["hashing"]["bits"],
        seed=lambda wc: int(wc.seed),
        # The images the backbone held out for validation stay out of the head's training too.
        validation_fraction=lambda wc: backbone_cfg(wc.backbone)["finetune"]["validation_fraction"],
    script:
        "../scripts/train_deep_hash_head.py"
