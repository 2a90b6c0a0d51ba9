rule aggregate:
    input:
        results=expand(run_dir("evaluate") + "/results.csv", dataset=DATASETS, model=MODELS, seed=SEEDS),
        # read beside each results.csv for the methods-at-a-glance table (1-year column, mapping times)
        drift=expand(run_dir("evaluate") + "/drift.csv", dataset=DATASETS, model=MODELS, seed=SEEDS),
        search=expand(run_dir("search") + "/search.json", dataset=DATASETS, model=MODELS, seed=SEEDS),
    output:
        summary=OUT + "/summary/summary.csv",
        markdown=OUT + "/summary/summary.md",
        methods=OUT + "/summary/methods.csv",
    params:
        digest=section_digest("report", "evaluate.reference_time"),
        out=OUT + "/summary",
    log:
        OUT + "/logs/aggregate/aggregate.log",
    benchmark:
        OUT + "/benchmarks/aggregate/aggregate.tsv"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    shell:
        f"{MPS} aggregate --params {PARAMS} --results {{input.results}} --out {{params.out}} > {{log}} 2>&1"
