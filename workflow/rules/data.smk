"""Data stage: one rule per configured dataset (download or local copy -> manifest), then splits."""

for _name, _dataset in config["datasets"].items():
    # Array datasets also write their pixels; folder datasets point at their image files.
    _outputs = {"manifest": manifest_path(_name)}
    if _dataset["kind"] in PIXEL_ARRAY_KINDS:
        _outputs["pixels"] = f"resources/datasets/{_name}/pixels.npy"

    rule:
        name:
            f"dataset_{_name}"
        output:
            **_outputs,
        params:
            kind=_dataset["kind"],
            root=_dataset["root"],
            checksums=_dataset["checksums"],
            download_dir=f"resources/downloads/{_dataset['kind']}",
        log:
            f"logs/datasets/{_name}.log",
        benchmark:
            f"logs/benchmarks/datasets/{_name}.tsv"
        conda:
            ENV
        script:
            "../scripts/prepare_dataset.py"


rule sample_split:
    input:
        manifest=lambda wc: manifest_path(wc.dataset),
    output:
        split=f"{RESULTS}/{{dataset}}/splits/{{protocol}}.parquet",
        counts=f"{RESULTS}/{{dataset}}/splits/{{protocol}}_counts.tsv",
    params:
        protocol=lambda wc: config["protocols"][wc.protocol],
        seed=config["seed"],
    log:
        "logs/{dataset}/splits/{protocol}.log",
    benchmark:
        "logs/benchmarks/{dataset}/splits/{protocol}.tsv"
    conda:
        ENV
    script:
        "../scripts/sample_split.py"
