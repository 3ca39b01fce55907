"""Report stage: the papers' tables and figures from the evaluation files."""


rule collect_metrics:
    input:
        summaries=[e["summary"] for e in evaluated()],
        timings=[e["timing"] for e in evaluated()],
    output:
        parquet=f"{REPORT}/metrics.parquet",
        csv=report(f"{REPORT}/metrics.csv", caption="../report/metrics.rst", category="Tables"),
    params:
        entries=evaluated(),
    log:
        f"logs/{REPORT}/collect_metrics.log",
    benchmark:
        f"logs/benchmarks/{REPORT}/collect_metrics.tsv"
    conda:
        ENV
    script:
        "../scripts/collect_metrics.py"


rule hashing_tables:
    input:
        rules.collect_metrics.output.parquet,
    output:
        table1=report(f"{REPORT}/table1_ba_map.csv", caption="../report/table1.rst", category="Tables", subcategory="Hashing"),
        table1_md=f"{REPORT}/table1_ba_map.md",
        table2=report(f"{REPORT}/table2_hashing_methods.csv", caption="../report/table2.rst", category="Tables", subcategory="Hashing"),
        table2_md=f"{REPORT}/table2_hashing_methods.md",
    log:
        f"logs/{REPORT}/hashing_tables.log",
    benchmark:
        f"logs/benchmarks/{REPORT}/hashing_tables.tsv"
    conda:
        ENV
    script:
        "../scripts/hashing_tables.py"


rule metric_learning_table:
    input:
        rules.collect_metrics.output.parquet,
    output:
        table=report(f"{REPORT}/table_metric_learning.csv", caption="../report/table_metric.rst", category="Tables", subcategory="Siamese and triplet"),
        markdown=f"{REPORT}/table_metric_learning.md",
    params:
        models=config["metric_learning"]["models"],
    log:
        f"logs/{REPORT}/metric_learning_table.log",
    benchmark:
        f"logs/benchmarks/{REPORT}/metric_learning_table.tsv"
    conda:
        ENV
    script:
        "../scripts/metric_learning_table.py"


rule timing_table:
    input:
        rules.collect_metrics.output.parquet,
    output:
        table=report(f"{REPORT}/table_retrieval_time.csv", caption="../report/table_time.rst", category="Tables"),
        markdown=f"{REPORT}/table_retrieval_time.md",
    log:
        f"logs/{REPORT}/timing_table.log",
    benchmark:
        f"logs/benchmarks/{REPORT}/timing_table.tsv"
    conda:
        ENV
    script:
        "../scripts/timing_table.py"


rule figure_finetune:
    input:
        histories=[r["history"] for r in hashing_runs()],
    output:
        report(f"{REPORT}/fig4_finetune_accuracy.png", caption="../report/fig4.rst", category="Figures", subcategory="Hashing"),
    params:
        names=[f"{r['dataset']} · {r['backbone']}" for r in hashing_runs()],
    log:
        f"logs/{REPORT}/figure_finetune.log",
    benchmark:
        f"logs/benchmarks/{REPORT}/figure_finetune.tsv"
    conda:
        ENV
    script:
        "../scripts/figure_finetune.py"


rule figure_ba_objective:
    input:
        traces=[t["trace"] for t in ba_traces()],
    output:
        report(f"{REPORT}/fig5_ba_objective.png", caption="../report/fig5.rst", category="Figures", subcategory="Hashing"),
    params:
        labels=[[t["name"], t["bits"]] for t in ba_traces()],
    log:
        f"logs/{REPORT}/figure_ba_objective.log",
    benchmark:
        f"logs/benchmarks/{REPORT}/figure_ba_objective.tsv"
    conda:
        ENV
    script:
        "../scripts/figure_ba_objective.py"


rule figure_pr:
    input:
        curves=[e["pr"] for e in evaluated("hashing")],
    output:
        report(f"{REPORT}/fig6_precision_recall.png", caption="../report/fig6.rst", category="Figures", subcategory="Hashing"),
    params:
        labels=[[e["dataset"], e["descriptor"]] for e in evaluated("hashing")],
    log:
        f"logs/{REPORT}/figure_pr.log",
    benchmark:
        f"logs/benchmarks/{REPORT}/figure_pr.tsv"
    conda:
        ENV
    script:
        "../scripts/figure_pr.py"


rule figure_top10:
    input:
        ranking=lambda wc: f"{RESULTS}/{wc.dataset}/retrieval/{showcase(wc.dataset)}/ranking.parquet",
        manifest=lambda wc: manifest_path(wc.dataset),
    output:
        report(f"{REPORT}/fig7_top10_{{dataset}}.png", caption="../report/fig7.rst", category="Figures", subcategory="Top results"),
    params:
        descriptor=lambda wc: showcase(wc.dataset),
        mode=lambda wc: showcase_mode(wc.dataset),
        seed=config["seed"],
    log:
        f"logs/{REPORT}/figure_top10_{{dataset}}.log",
    benchmark:
        f"logs/benchmarks/{REPORT}/figure_top10_{{dataset}}.tsv"
    conda:
        ENV
    script:
        "../scripts/figure_top10.py"


rule figure_metric_learning:
    input:
        metrics=rules.collect_metrics.output.parquet,
        curves=[e["pr"] for e in evaluated("metric")],
    output:
        precision=report(f"{REPORT}/fig8_metric_precision.png", caption="../report/fig8.rst", category="Figures", subcategory="Siamese and triplet"),
        map=report(f"{REPORT}/fig9_metric_map.png", caption="../report/fig9.rst", category="Figures", subcategory="Siamese and triplet"),
    params:
        labels=[[e["dataset"], metric_model(e["descriptor"])] for e in evaluated("metric")],
        models=config["metric_learning"]["models"],
    log:
        f"logs/{REPORT}/figure_metric_learning.log",
    benchmark:
        f"logs/benchmarks/{REPORT}/figure_metric_learning.tsv"
    conda:
        ENV
    script:
        "../scripts/figure_metric_learning.py"
