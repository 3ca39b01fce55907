"""Report stage: one job reads every repeat's evaluation files and writes the papers' tables and
figures (mean ± sd over seeds), results.tsv (every number with its spread) and provenance.json."""


rule report:
    input:
        summaries=evaluation_files("summary"),
        timings=evaluation_files("timing"),
        curves=evaluation_files("pr"),
        histories=[h["path"] for h in histories()],
        traces=[t["path"] for t in traces()],
        rankings=[s["ranking"] for s in showcases()],
        manifests=[s["manifest"] for s in showcases()],
    output:
        **report_outputs(),
        top10=[report(s["path"], caption="../report/fig7.rst", category="Figures", subcategory="Top results") for s in showcases()],
    log:
        paths.log("report", Path(paths.report_dir).name),
    benchmark:
        paths.benchmark("report", Path(paths.report_dir).name)
    conda:
        ENV
    params:
        entries=entries(),
        histories=histories(),
        traces=traces(),
        showcases=showcases(),
        models=config["metric_learning"]["models"],
        n_neighbours=config["evaluation"]["neighbours"],
        config=config,
    script:
        "../scripts/report.py"


rule explorer:
    input:
        rankings=lambda wc: explorer_files(wc.dataset, "ranking"),
        per_query=lambda wc: explorer_files(wc.dataset, "per_query"),
        manifest=lambda wc: paths.manifest(wc.dataset),
    output:
        report(paths.report("explorer_{dataset}.html"), caption="../report/explorer.rst", category="Explorer"),
    log:
        paths.log("report", Path(paths.report_dir).name, "explorer_{dataset}"),
    benchmark:
        paths.benchmark("report", Path(paths.report_dir).name, "explorer_{dataset}")
    wildcard_constraints:
        dataset=dataset_pattern(list(config["datasets"])),
    conda:
        ENV
    params:
        descriptors=lambda wc: descriptor_names(config, wc.dataset),
        seed=SEEDS[0],
        mode=lambda wc: showcase_mode(wc.dataset),
        title=lambda wc: f"{wc.dataset}, seed {SEEDS[0]}: retrieval explorer",
    script:
        "../scripts/explorer.py"
