rule aggregate:
    input:
        results=expand(run_dir("evaluate") + "/results.csv", dataset=DATASETS, model=MODELS, seed=SEEDS),
    output:
        summary=OUT + "/summary/summary.csv",
        markdown=OUT + "/summary/summary.md",
    params:
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
