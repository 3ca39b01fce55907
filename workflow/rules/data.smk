"""Data stage: one rule per configured dataset (download or local copy -> manifest), then splits."""

for _name, _dataset in config["datasets"].items():
    # Array datasets also write their pixels; folder datasets point at their image files.
    _outputs = {"manifest": paths.manifest(_name)}
    if _dataset["kind"] in PIXEL_ARRAY_KINDS:
        _outputs["pixels"] = paths.pixels(_name)
    _folder = _dataset["kind"] not in PIXEL_ARRAY_KINDS and _dataset["root"] is not None
    # A multi-label dataset's labels table is an input: editing it reruns the dataset, wherever it is.
    _inputs = {"labels": os.path.join(_dataset["root"], _dataset["labels"])} if _dataset["labels"] is not None else {}

    # A checkpoint: sharded feature extraction plans its shards from the manifest it writes.
    checkpoint:
        name:
            f"dataset_{_name}"
        input:
            **_inputs,
        output:
            **_outputs,
        log:
            paths.log("datasets", _name),
        benchmark:
            paths.benchmark("datasets", _name)
        conda:
            ENV
        params:
            kind=_dataset["kind"],
            root=_dataset["root"],
            checksums=_dataset["checksums"],
            download_dir=paths.downloads(_dataset["kind"]),
            listing=folder_listing(_dataset["root"]) if _folder else None,
        script:
            "../scripts/prepare_dataset.py"


rule sample_split:
    input:
        manifest=lambda wc: paths.manifest(wc.dataset),
    output:
        split=paths.split("{dataset}", "{seed}", "{protocol}"),
        counts=paths.split_counts("{dataset}", "{seed}", "{protocol}"),
    log:
        paths.log("{dataset}", "seed{seed}", "splits", "{protocol}"),
    benchmark:
        paths.benchmark("{dataset}", "seed{seed}", "splits", "{protocol}")
    # The fine-tunes' priority: a priority does not pass to the jobs a job waits for, and a
    # split left behind the small jobs held back half the fine-tunes (config/mnist.yaml's last ran
    # 15 minutes in).
    priority: 3
    conda:
        ENV
    params:
        protocol=lambda wc: config["protocols"][wc.protocol],
        seed=lambda wc: int(wc.seed),
    script:
        "../scripts/sample_split.py"
