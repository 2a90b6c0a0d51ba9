rule prepare_data:
    output:
        directory(OUT + "/data/{dataset}"),
    params:
        digest=section_digest("data"),
    log:
        OUT + "/logs/prepare-data/{dataset}.log",
    benchmark:
        OUT + "/benchmarks/prepare-data/{dataset}.tsv"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=15,
    shell:
        f"{MPS} prepare-data --params {PARAMS} --dataset {{wildcards.dataset}} --out {{output}} > {{log}} 2>&1"
