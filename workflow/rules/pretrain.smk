rule pretrain:
    input:
        data=OUT + "/data/{dataset}",
    output:
        model=run_dir("pretrain") + "/model.pt",
        metrics=run_dir("pretrain") + "/metrics.json",
    params:
        digest=section_digest("seed", "model", "pretrain", "device"),
        out=run_dir("pretrain"),
    log:
        OUT + "/logs/pretrain/{dataset}-{model}-s{seed}.log",
    benchmark:
        OUT + "/benchmarks/pretrain/{dataset}-{model}-s{seed}.tsv"
    threads: 4
    resources:
        mem_mb=6000,
        runtime=120,
        gpu=GPUS,
    shell:
        stage_cmd("pretrain") + " --data {input.data} --out {params.out} > {log} 2>&1"
